//! Events and object versions in the embedded SQLite store ([`SqliteEventStore`]).
//!
//! # Layout (tables prefixed `ev_`, in the same file as the other signals)
//! ```sql
//! ev_events(cluster, uid, …involved object…, workload, origin)   PK (cluster, uid)   -- written once
//! ev_occurrences(cluster, uid, count, at_ms)                      PK (cluster, uid, count, at_ms)
//! ev_versions(id, cluster, uid, rv, seq, grp, kind, namespace, name, workload, at_ms,
//!             change, category, summary, manager, gitops, gap_from_ms,
//!             patch TEXT,        -- merge patch from seq-1 (NULL for keyframes' first)
//!             full BLOB)         -- zstd JSON, every KEYFRAME_EVERY versions
//!             UNIQUE (cluster, uid, rv), UNIQUE (cluster, uid, seq)
//! ev_latest(cluster, uid, …, rv, seq, deleted, object BLOB)       PK (cluster, uid)   -- last stored state
//! ev_checkpoints(cluster, grp, kind, rv, at_ms)                   PK (cluster, grp, kind)
//! ```
//! An object at T is its keyframe at or before the wanted version plus at
//! most `KEYFRAME_EVERY - 1` patches: bounded work whatever the history.
//!
//! Writes run on one connection (WAL, `synchronous=FULL`, busy timeout), one
//! `BEGIN IMMEDIATE` transaction per call, answered after commit. Two
//! processes on the same file serialise on SQLite's write lock; since the
//! patch is computed inside the transaction from `ev_latest`, the result is
//! the same whichever writes first.

use async_trait::async_trait;
use kube_insight_core::event::{normalize_kind, workload_of_ref, ChangeKind, KubeEvent, ObjectRef};
use kube_insight_store::change_feed::is_status_only;
use kube_insight_store::error::{Error, Result};
use kube_insight_store::event_codec::{
    apply_patches, decode_object, decode_patch, encode_object, encode_patch, event_count,
    event_origin, kind_matches, merge_timeline, plan_write, EventLine, LatestState, WritePlan,
};
use kube_insight_store::events::{
    ChangeQuery, ChangeRow, EventQuery, EventStore, EventWriteOutcome, LiveObject, ObjectAt,
    ObjectWrite, ObjectWriteOutcome, WatchCheckpoint,
};
use kube_insight_store::StoreOptions;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// The `ev_*` tables; idempotent.
const DDL: &str = "
CREATE TABLE IF NOT EXISTS ev_events (
    cluster          TEXT NOT NULL,
    uid              TEXT NOT NULL,
    namespace        TEXT NOT NULL,
    name             TEXT NOT NULL,
    reason           TEXT NOT NULL,
    type             TEXT NOT NULL,
    message          TEXT NOT NULL,
    inv_kind         TEXT NOT NULL,
    inv_namespace    TEXT NOT NULL,
    inv_name         TEXT NOT NULL,
    inv_uid          TEXT NOT NULL,
    inv_api_version  TEXT NOT NULL,
    inv_field_path   TEXT NOT NULL,
    source_component TEXT NOT NULL,
    source_host      TEXT NOT NULL,
    workload         TEXT NOT NULL,
    origin           TEXT NOT NULL,
    first_ms         INTEGER NOT NULL,
    rv               TEXT NOT NULL,
    PRIMARY KEY (cluster, uid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ev_events_content ON ev_events(cluster, reason, inv_kind, message);
CREATE TABLE IF NOT EXISTS ev_occurrences (
    cluster TEXT NOT NULL,
    uid     TEXT NOT NULL,
    count   INTEGER NOT NULL,
    at_ms   INTEGER NOT NULL,
    PRIMARY KEY (cluster, uid, count, at_ms)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ev_occurrences_at ON ev_occurrences(at_ms);
CREATE TABLE IF NOT EXISTS ev_versions (
    id          INTEGER PRIMARY KEY,
    cluster     TEXT NOT NULL,
    uid         TEXT NOT NULL,
    rv          TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    grp         TEXT NOT NULL,
    kind        TEXT NOT NULL,
    namespace   TEXT NOT NULL,
    name        TEXT NOT NULL,
    workload    TEXT NOT NULL,
    at_ms       INTEGER NOT NULL,
    change      TEXT NOT NULL,
    category    TEXT NOT NULL,
    summary     TEXT NOT NULL,
    manager     TEXT,
    gitops      TEXT,
    gap_from_ms INTEGER,
    patch       TEXT,
    full        BLOB
);
CREATE UNIQUE INDEX IF NOT EXISTS ev_versions_rv ON ev_versions(cluster, uid, rv);
CREATE UNIQUE INDEX IF NOT EXISTS ev_versions_seq ON ev_versions(cluster, uid, seq);
CREATE INDEX IF NOT EXISTS ev_versions_name ON ev_versions(namespace, name, at_ms);
CREATE INDEX IF NOT EXISTS ev_versions_at ON ev_versions(at_ms);
CREATE TABLE IF NOT EXISTS ev_latest (
    cluster   TEXT NOT NULL,
    uid       TEXT NOT NULL,
    grp       TEXT NOT NULL,
    kind      TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name      TEXT NOT NULL,
    rv        TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    at_ms     INTEGER NOT NULL,
    deleted   INTEGER NOT NULL,
    object    BLOB NOT NULL,
    PRIMARY KEY (cluster, uid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ev_latest_kind ON ev_latest(cluster, grp, kind, deleted);
CREATE TABLE IF NOT EXISTS ev_checkpoints (
    cluster TEXT NOT NULL,
    grp     TEXT NOT NULL,
    kind    TEXT NOT NULL,
    rv      TEXT NOT NULL,
    at_ms   INTEGER NOT NULL,
    PRIMARY KEY (cluster, grp, kind)
) WITHOUT ROWID;
";

/// Creates the `ev_*` tables and indexes if missing. Idempotent.
pub fn create_schema(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(DDL)
}

/// Tuning of the events backend.
#[derive(Debug, Clone)]
pub struct SqliteEventConfig {
    /// A full copy every this many versions of an object.
    pub keyframe_every: i64,
    /// Writes waiting for the write connection; beyond: [`Error::Overloaded`].
    pub max_pending_writes: usize,
    pub enqueue_timeout: Duration,
    pub busy_timeout: Duration,
    pub read_connections: usize,
    pub zstd_level: i32,
    /// Rows one timeline or events query may return at most.
    pub max_rows: usize,
}

impl Default for SqliteEventConfig {
    fn default() -> Self {
        SqliteEventConfig {
            keyframe_every: 16,
            max_pending_writes: 64,
            enqueue_timeout: Duration::from_secs(1),
            busy_timeout: Duration::from_secs(5),
            read_connections: 4,
            zstd_level: 3,
            max_rows: 100_000,
        }
    }
}

struct Shared {
    path: PathBuf,
    path_str: String,
    retention_ms: i64,
    config: SqliteEventConfig,
    writer: Mutex<Connection>,
    pool: Mutex<Vec<Connection>>,
    now_floor: AtomicI64,
}

impl Shared {
    fn sql(&self, e: rusqlite::Error) -> Error {
        if let rusqlite::Error::SqliteFailure(f, _) = &e {
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) {
                return Error::Unavailable(format!("sqlite store {} is busy: {e}", self.path_str));
            }
        }
        Error::Sqlite {
            path: self.path_str.clone(),
            source: e.into(),
        }
    }

    fn read_conn(&self) -> Result<Connection> {
        if let Some(c) = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(c);
        }
        let c = Connection::open(&self.path).map_err(|e| self.sql(e))?;
        c.busy_timeout(self.config.busy_timeout)
            .map_err(|e| self.sql(e))?;
        c.execute_batch("PRAGMA query_only = 1;")
            .map_err(|e| self.sql(e))?;
        Ok(c)
    }

    fn give_back(&self, c: Connection) {
        let mut idle = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.config.read_connections.max(1) && c.is_autocommit() {
            idle.push(c);
        }
    }

    fn compress(&self, v: &Value) -> Result<Vec<u8>> {
        encode_object(v, self.config.zstd_level)
    }

    fn decompress(&self, b: &[u8]) -> Result<Value> {
        decode_object(b)
    }
}

/// The embedded events store. Cheap to share behind an `Arc`.
pub struct SqliteEventStore {
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
}

impl std::fmt::Debug for SqliteEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteEventStore")
            .field("path", &self.shared.path_str)
            .finish_non_exhaustive()
    }
}

impl SqliteEventStore {
    /// Opens (creating if needed) the database at `path` and creates the
    /// `ev_*` tables.
    pub async fn open(path: &Path, options: StoreOptions) -> Result<Self> {
        Self::open_with(path, options, SqliteEventConfig::default()).await
    }

    pub async fn open_with(
        path: &Path,
        options: StoreOptions,
        config: SqliteEventConfig,
    ) -> Result<Self> {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || Self::open_blocking(path, options, config))
            .await
            .map_err(|e| Error::Unavailable(format!("opening the sqlite event store: {e}")))?
    }

    fn open_blocking(
        path: PathBuf,
        options: StoreOptions,
        config: SqliteEventConfig,
    ) -> Result<Self> {
        let path_str = path.display().to_string();
        let sq = |e: rusqlite::Error| Error::Sqlite {
            path: path_str.clone(),
            source: e.into(),
        };
        let conn = super::schema::open_connection(&path, config.busy_timeout)?;
        create_schema(&conn).map_err(sq)?;
        tracing::info!(path = %path_str, "sqlite event store open");
        let slots = Arc::new(Semaphore::new(config.max_pending_writes.max(1)));
        Ok(SqliteEventStore {
            shared: Arc::new(Shared {
                path,
                path_str,
                retention_ms: options.retention.events.as_millis().min(i64::MAX as u128) as i64,
                config,
                writer: Mutex::new(conn),
                pool: Mutex::new(Vec::new()),
                now_floor: AtomicI64::new(i64::MIN),
            }),
            slots,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Shared, &mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let permit = match tokio::time::timeout(
            self.shared.config.enqueue_timeout,
            self.slots.clone().acquire_owned(),
        )
        .await
        {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => return Err(Error::Unavailable("the event store is closed".into())),
            Err(_) => {
                return Err(Error::Overloaded(format!(
                    "the event write queue is full ({} writes waiting)",
                    self.shared.config.max_pending_writes
                )))
            }
        };
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut conn = shared.writer.lock().unwrap_or_else(|e| e.into_inner());
            f(&shared, &mut conn)
        })
        .await
        .map_err(|e| Error::Unavailable(format!("sqlite event write task failed: {e}")))?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Shared, &Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let c = shared.read_conn()?;
            let r = f(&shared, &c);
            shared.give_back(c);
            r
        })
        .await
        .map_err(|e| Error::Unavailable(format!("sqlite event read task failed: {e}")))?
    }
}

// ---------------------------------------------------------------------------
// Writes

fn write_events_tx(
    sh: &Shared,
    conn: &mut Connection,
    events: Vec<KubeEvent>,
) -> Result<EventWriteOutcome> {
    let sql = |e| sh.sql(e);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql)?;
    let mut out = EventWriteOutcome::default();
    for ev in events {
        let synthetic = ev.is_synthetic();
        if synthetic {
            // A watched twin within a second: already stored.
            let twin: Option<i64> = tx
                .query_row(
                    "SELECT 1 FROM ev_events e JOIN ev_occurrences o ON o.cluster = e.cluster AND o.uid = e.uid
                     WHERE e.cluster = ?1 AND e.reason = ?2 AND e.inv_kind = ?3 AND e.message = ?4 AND e.uid NOT LIKE 'synthetic:%'
                       AND ((o.at_ms BETWEEN ?5 - 1000 AND ?5 + 1000) OR (?5 BETWEEN e.first_ms - 1000 AND o.at_ms + 1000))
                     LIMIT 1",
                    params![ev.cluster, ev.reason, ev.involved.kind, ev.message, ev.last_ms],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sql)?;
            if twin.is_some() {
                out.matched_watch += 1;
                continue;
            }
        }
        let workload = workload_of_ref(&ev.involved).unwrap_or_default();
        let created = tx
            .execute(
                "INSERT OR IGNORE INTO ev_events (cluster, uid, namespace, name, reason, type, message, inv_kind, inv_namespace, inv_name,
                   inv_uid, inv_api_version, inv_field_path, source_component, source_host, workload, origin, first_ms, rv)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
                params![
                    ev.cluster,
                    ev.uid,
                    ev.namespace,
                    ev.name,
                    ev.reason,
                    ev.event_type,
                    ev.message,
                    ev.involved.kind,
                    ev.involved.namespace,
                    ev.involved.name,
                    ev.involved.uid,
                    ev.involved.api_version,
                    ev.involved.field_path,
                    ev.source_component,
                    ev.source_host,
                    workload,
                    ev.origin.as_str(),
                    ev.first_ms,
                    ev.resource_version,
                ],
            )
            .map_err(sql)?;
        out.events_created += created as u64;
        let count = if synthetic { 0 } else { ev.count as i64 };
        // One occurrence per count: a re-send of the same count (another
        // replica, a re-list, kube-eventer) is a duplicate whatever its time.
        let exists: Option<i64> = if synthetic {
            tx.query_row(
                "SELECT 1 FROM ev_occurrences WHERE cluster = ?1 AND uid = ?2 AND count = 0 AND at_ms = ?3",
                params![ev.cluster, ev.uid, ev.last_ms],
                |r| r.get(0),
            )
        } else {
            tx.query_row(
                "SELECT 1 FROM ev_occurrences WHERE cluster = ?1 AND uid = ?2 AND count = ?3",
                params![ev.cluster, ev.uid, count],
                |r| r.get(0),
            )
        }
        .optional()
        .map_err(sql)?;
        if exists.is_some() {
            out.duplicates += 1;
        } else {
            tx.execute(
                "INSERT OR IGNORE INTO ev_occurrences (cluster, uid, count, at_ms) VALUES (?1, ?2, ?3, ?4)",
                params![ev.cluster, ev.uid, count, ev.last_ms],
            )
            .map_err(sql)?;
            out.occurrences_written += 1;
        }
        if !synthetic {
            // Synthetic twins (kube-eventer default body) that arrived first.
            let twins: Vec<String> = {
                let mut st = tx
                    .prepare_cached(
                        "SELECT DISTINCT e.uid FROM ev_events e JOIN ev_occurrences o ON o.cluster = e.cluster AND o.uid = e.uid
                         WHERE e.cluster = ?1 AND e.reason = ?2 AND e.inv_kind = ?3 AND e.message = ?4 AND e.uid >= 'synthetic:' AND e.uid < 'synthetic;'
                           AND o.at_ms BETWEEN ?5 - 1000 AND ?6 + 1000",
                    )
                    .map_err(sql)?;
                let rows = st
                    .query_map(
                        params![
                            ev.cluster,
                            ev.reason,
                            ev.involved.kind,
                            ev.message,
                            ev.first_ms,
                            ev.last_ms
                        ],
                        |r| r.get(0),
                    )
                    .map_err(sql)?;
                rows.collect::<rusqlite::Result<_>>().map_err(sql)?
            };
            for uid in twins {
                tx.execute(
                    "DELETE FROM ev_occurrences WHERE cluster = ?1 AND uid = ?2",
                    params![ev.cluster, uid],
                )
                .map_err(sql)?;
                tx.execute(
                    "DELETE FROM ev_events WHERE cluster = ?1 AND uid = ?2",
                    params![ev.cluster, uid],
                )
                .map_err(sql)?;
            }
        }
    }
    tx.commit().map_err(sql)?;
    Ok(out)
}

fn write_objects_tx(
    sh: &Shared,
    conn: &mut Connection,
    writes: Vec<ObjectWrite>,
) -> Result<ObjectWriteOutcome> {
    let sql = |e| sh.sql(e);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql)?;
    let mut out = ObjectWriteOutcome::default();
    for w in writes {
        let dup: Option<i64> = tx
            .query_row(
                "SELECT 1 FROM ev_versions WHERE cluster = ?1 AND uid = ?2 AND rv = ?3",
                params![w.cluster, w.uid, w.resource_version],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql)?;
        if dup.is_some() {
            out.duplicates += 1;
            continue;
        }
        let latest: Option<(String, i64, bool, Vec<u8>, i64)> = tx
            .query_row(
                "SELECT rv, seq, deleted, object, at_ms FROM ev_latest WHERE cluster = ?1 AND uid = ?2",
                params![w.cluster, w.uid],
                |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? != 0, r.get(3)?, r.get(4)?)),
            )
            .optional()
            .map_err(sql)?;
        let latest = match latest {
            Some((rv, seq, deleted, blob, at_ms)) => Some(LatestState {
                at_ms,
                rv,
                seq,
                deleted,
                object: sh.decompress(&blob)?,
            }),
            None => None,
        };
        let v = match plan_write(latest.as_ref(), false, &w, sh.config.keyframe_every) {
            WritePlan::Duplicate => {
                out.duplicates += 1;
                continue;
            }
            WritePlan::Stale => {
                out.stale += 1;
                continue;
            }
            WritePlan::Unchanged => {
                tx.execute(
                    "UPDATE ev_latest SET rv = ?3 WHERE cluster = ?1 AND uid = ?2",
                    params![w.cluster, w.uid, w.resource_version],
                )
                .map_err(sql)?;
                out.unchanged += 1;
                continue;
            }
            WritePlan::Version(v) => v,
        };
        let deleted = v.change == ChangeKind::Deleted;
        let latest_blob = sh.compress(&v.state)?;
        let full = if v.keyframe {
            Some(latest_blob.clone())
        } else {
            None
        };
        let patch_text = match &v.patch {
            Some(p) => Some(encode_patch(p)?),
            None => None,
        };
        tx.execute(
            "INSERT INTO ev_versions (cluster, uid, rv, seq, grp, kind, namespace, name, workload, at_ms, change, category, summary,
               manager, gitops, gap_from_ms, patch, full)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
            params![
                w.cluster,
                w.uid,
                w.resource_version,
                v.seq,
                w.group,
                w.kind,
                w.namespace,
                w.name,
                v.workload,
                v.at_ms,
                v.change.as_str(),
                v.category,
                v.summary,
                v.manager,
                w.gitops,
                w.gap.map(|g| g.0),
                patch_text,
                full,
            ],
        )
        .map_err(sql)?;
        tx.execute(
            "INSERT INTO ev_latest (cluster, uid, grp, kind, namespace, name, rv, seq, at_ms, deleted, object)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT(cluster, uid) DO UPDATE SET rv = excluded.rv, seq = excluded.seq, at_ms = excluded.at_ms,
               deleted = excluded.deleted, object = excluded.object, name = excluded.name, namespace = excluded.namespace",
            params![w.cluster, w.uid, w.group, w.kind, w.namespace, w.name, w.resource_version, v.seq, v.at_ms, i64::from(deleted), latest_blob],
        )
        .map_err(sql)?;
        out.versions_written += 1;
    }
    tx.commit().map_err(sql)?;
    Ok(out)
}

// ---------------------------------------------------------------------------
// Reads

/// Rebuilds version `seq` of `uid` from its keyframe and patches.
fn rebuild(sh: &Shared, c: &Connection, cluster: &str, uid: &str, seq: i64) -> Result<Value> {
    let sql = |e| sh.sql(e);
    let (kseq, blob): (i64, Vec<u8>) = c
        .query_row(
            "SELECT seq, full FROM ev_versions WHERE cluster = ?1 AND uid = ?2 AND seq <= ?3 AND full IS NOT NULL ORDER BY seq DESC LIMIT 1",
            params![cluster, uid, seq],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(sql)?
        .ok_or_else(|| Error::Corrupt(format!("object {uid} in cluster {cluster}: no keyframe at or before version {seq}")))?;
    let obj = sh.decompress(&blob)?;
    if kseq >= seq {
        return Ok(obj);
    }
    let mut st = c
        .prepare_cached("SELECT patch FROM ev_versions WHERE cluster = ?1 AND uid = ?2 AND seq > ?3 AND seq <= ?4 ORDER BY seq")
        .map_err(sql)?;
    let rows = st
        .query_map(params![cluster, uid, kseq, seq], |r| {
            r.get::<_, Option<String>>(0)
        })
        .map_err(sql)?;
    let mut patches = Vec::new();
    for p in rows {
        if let Some(p) = p.map_err(sql)? {
            patches.push(decode_patch(p.as_bytes(), uid)?);
        }
    }
    Ok(apply_patches(obj, &patches))
}

fn object_at_q(
    sh: &Shared,
    c: &Connection,
    cluster: Option<&str>,
    kind: &str,
    namespace: &str,
    name: &str,
    at_ms: i64,
) -> Result<Option<ObjectAt>> {
    let sql = |e| sh.sql(e);
    let kind_lc = normalize_kind(kind);
    let mut st = c
        .prepare_cached(
            "SELECT cluster, uid, rv, seq, grp, kind, at_ms, change, manager FROM ev_versions
             WHERE namespace = ?1 AND name = ?2 AND at_ms <= ?3 AND (?4 IS NULL OR cluster = ?4)
             ORDER BY at_ms DESC, seq DESC LIMIT 64",
        )
        .map_err(sql)?;
    type Row = (
        String,
        String,
        String,
        i64,
        String,
        String,
        i64,
        String,
        Option<String>,
    );
    let rows = st
        .query_map(
            params![namespace, name, at_ms, cluster],
            |r| -> rusqlite::Result<Row> {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                ))
            },
        )
        .map_err(sql)?;
    let mut found: Option<Row> = None;
    for r in rows {
        let r = r.map_err(sql)?;
        if normalize_kind(&r.5) == kind_lc {
            found = Some(r);
            break;
        }
    }
    let Some((cl, uid, rv, seq, grp, kind, version_ms, change, manager)) = found else {
        return Ok(None);
    };
    let change = ChangeKind::parse(&change).unwrap_or(ChangeKind::Updated);
    if change == ChangeKind::Deleted {
        return Ok(None);
    }
    let object = rebuild(sh, c, &cl, &uid, seq)?;
    Ok(Some(ObjectAt {
        cluster: cl,
        group: grp,
        kind,
        namespace: namespace.to_string(),
        name: name.to_string(),
        uid,
        resource_version: rv,
        version_ms,
        change,
        manager,
        object,
    }))
}

fn query_events_q(sh: &Shared, c: &Connection, q: &EventQuery) -> Result<Vec<KubeEvent>> {
    let sql = |e| sh.sql(e);
    let limit = q.limit.clamp(1, sh.config.max_rows) as i64;
    let kind = q.kind.as_deref().map(normalize_kind);
    let mut st = c
        .prepare_cached(
            "SELECT e.cluster, e.uid, e.namespace, e.name, e.reason, e.type, e.message, e.inv_kind, e.inv_namespace, e.inv_name,
                    e.inv_uid, e.inv_api_version, e.inv_field_path, e.source_component, e.source_host, e.origin, e.first_ms, e.rv,
                    max(o.count), count(*), max(o.at_ms)
             FROM ev_occurrences o JOIN ev_events e ON e.cluster = o.cluster AND e.uid = o.uid
             WHERE o.at_ms >= ?1
               AND (?3 IS NULL OR e.cluster = ?3)
               AND (?4 IS NULL OR e.inv_namespace = ?4 OR e.namespace = ?4)
               AND (?5 IS NULL OR e.inv_name = ?5)
               AND (?6 IS NULL OR e.reason = ?6)
               AND (?7 IS NULL OR e.type = ?7)
             GROUP BY e.cluster, e.uid
             HAVING min(e.first_ms, min(o.at_ms)) <= ?2
             ORDER BY max(o.at_ms) DESC, e.uid",
        )
        .map_err(sql)?;
    let rows = st
        .query_map(
            params![
                q.range.start_ms,
                q.range.end_ms,
                q.cluster,
                q.namespace,
                q.name,
                q.reason,
                q.event_type
            ],
            |r| {
                let uid: String = r.get(1)?;
                let max_count: i64 = r.get(18)?;
                let n: i64 = r.get(19)?;
                let last: i64 = r.get(20)?;
                let first: i64 = r.get(16)?;
                let origin: String = r.get(15)?;
                Ok(KubeEvent {
                    cluster: r.get(0)?,
                    count: event_count(&uid, max_count, n),
                    uid,
                    namespace: r.get(2)?,
                    name: r.get(3)?,
                    reason: r.get(4)?,
                    event_type: r.get(5)?,
                    message: r.get(6)?,
                    involved: ObjectRef {
                        kind: r.get(7)?,
                        namespace: r.get(8)?,
                        name: r.get(9)?,
                        uid: r.get(10)?,
                        api_version: r.get(11)?,
                        field_path: r.get(12)?,
                    },
                    source_component: r.get(13)?,
                    source_host: r.get(14)?,
                    first_ms: first.min(last),
                    last_ms: last,
                    resource_version: r.get(17)?,
                    origin: event_origin(&origin),
                })
            },
        )
        .map_err(sql)?;
    let mut out = Vec::new();
    for r in rows {
        let ev = r.map_err(sql)?;
        if !kind_matches(kind.as_deref(), &ev.involved.kind) {
            continue;
        }
        out.push(ev);
        if out.len() as i64 >= limit {
            break;
        }
    }
    Ok(out)
}

fn changes_q(sh: &Shared, c: &Connection, q: &ChangeQuery) -> Result<Vec<ChangeRow>> {
    let sql = |e| sh.sql(e);
    let limit = q.limit.clamp(1, sh.config.max_rows);
    let kind = q.kind.as_deref().map(normalize_kind);
    let mut out: Vec<ChangeRow> = Vec::new();
    {
        let mut st = c
            .prepare_cached(
                "SELECT at_ms, category, change, cluster, namespace, kind, name, uid, rv, summary, manager, gitops, patch, gap_from_ms
                 FROM ev_versions
                 WHERE at_ms BETWEEN ?1 AND ?2 AND change != 'observed'
                   AND (?3 IS NULL OR cluster = ?3)
                   AND (?4 IS NULL OR namespace = ?4)
                   AND (?5 IS NULL OR workload = ?5 OR name = ?5)
                 ORDER BY at_ms DESC, id DESC",
            )
            .map_err(sql)?;
        let rows = st
            .query_map(
                params![
                    q.range.start_ms,
                    q.range.end_ms,
                    q.cluster,
                    q.namespace,
                    q.workload
                ],
                |r| {
                    let patch: Option<String> = r.get(12)?;
                    Ok(ChangeRow {
                        at_ms: r.get(0)?,
                        category: r.get(1)?,
                        change: r.get(2)?,
                        cluster: r.get(3)?,
                        namespace: r.get(4)?,
                        kind: r.get(5)?,
                        name: r.get(6)?,
                        uid: r.get(7)?,
                        resource_version: r.get(8)?,
                        summary: r.get(9)?,
                        manager: r.get(10)?,
                        gitops: r.get(11)?,
                        patch: patch.and_then(|p| serde_json::from_str(&p).ok()),
                        reason: None,
                        count: None,
                        gap_from_ms: r.get(13)?,
                    })
                },
            )
            .map_err(sql)?;
        for r in rows {
            let row = r.map_err(sql)?;
            if !kind_matches(kind.as_deref(), &row.kind)
                || (!q.include_status && is_status_only(&row))
            {
                continue;
            }
            out.push(row);
            if out.len() >= limit {
                break;
            }
        }
    }
    if q.include_events {
        let mut st = c
            .prepare_cached(
                "SELECT max(o.at_ms), e.type, e.cluster, e.inv_namespace, e.inv_kind, e.inv_name, e.uid, e.rv, e.reason, e.message,
                        max(o.count), count(*), e.source_component
                 FROM ev_occurrences o JOIN ev_events e ON e.cluster = o.cluster AND e.uid = o.uid
                 WHERE o.at_ms BETWEEN ?1 AND ?2
                   AND (?3 IS NULL OR e.cluster = ?3)
                   AND (?4 IS NULL OR e.inv_namespace = ?4)
                   AND (?5 IS NULL OR e.workload = ?5 OR e.inv_name = ?5)
                 GROUP BY e.cluster, e.uid
                 ORDER BY max(o.at_ms) DESC",
            )
            .map_err(sql)?;
        let rows = st
            .query_map(
                params![
                    q.range.start_ms,
                    q.range.end_ms,
                    q.cluster,
                    q.namespace,
                    q.workload
                ],
                |r| {
                    let uid: String = r.get(6)?;
                    let max_count: i64 = r.get(10)?;
                    let n: i64 = r.get(11)?;
                    Ok(ChangeRow::from(EventLine {
                        count: event_count(&uid, max_count, n),
                        at_ms: r.get(0)?,
                        event_type: r.get(1)?,
                        cluster: r.get(2)?,
                        namespace: r.get(3)?,
                        kind: r.get(4)?,
                        name: r.get(5)?,
                        uid,
                        resource_version: r.get(7)?,
                        reason: r.get(8)?,
                        message: r.get(9)?,
                        source_component: r.get(12)?,
                    }))
                },
            )
            .map_err(sql)?;
        let mut events = Vec::new();
        for r in rows {
            let row = r.map_err(sql)?;
            if !kind_matches(kind.as_deref(), &row.kind) {
                continue;
            }
            events.push(row);
            if events.len() >= limit {
                break;
            }
        }
        out = merge_timeline(out, events, limit);
    }
    Ok(out)
}

fn maintain_tx(sh: &Shared, conn: &mut Connection, now_ms: i64) -> Result<u64> {
    let sql = |e| sh.sql(e);
    let cutoff = now_ms.saturating_sub(sh.retention_ms);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql)?;
    let mut deleted = 0u64;
    deleted += tx
        .execute(
            "DELETE FROM ev_occurrences WHERE at_ms < ?1",
            params![cutoff],
        )
        .map_err(sql)? as u64;
    deleted += tx
        .execute(
            "DELETE FROM ev_events WHERE NOT EXISTS (SELECT 1 FROM ev_occurrences o WHERE o.cluster = ev_events.cluster AND o.uid = ev_events.uid)",
            [],
        )
        .map_err(sql)? as u64;
    // Objects deleted before the cutoff: everything goes.
    let gone: Vec<(String, String)> = {
        let mut st = tx
            .prepare("SELECT cluster, uid FROM ev_latest WHERE deleted = 1 AND at_ms < ?1")
            .map_err(sql)?;
        let rows = st
            .query_map(params![cutoff], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(sql)?;
        rows.collect::<rusqlite::Result<_>>().map_err(sql)?
    };
    for (cl, uid) in &gone {
        deleted += tx
            .execute(
                "DELETE FROM ev_versions WHERE cluster = ?1 AND uid = ?2",
                params![cl, uid],
            )
            .map_err(sql)? as u64;
        deleted += tx
            .execute(
                "DELETE FROM ev_latest WHERE cluster = ?1 AND uid = ?2",
                params![cl, uid],
            )
            .map_err(sql)? as u64;
    }
    // Live objects: keep the last version before the cutoff (the state at
    // the cutoff), made a keyframe, and delete what is older.
    let old: Vec<(String, String, i64)> = {
        let mut st = tx
            .prepare("SELECT cluster, uid, max(seq) FROM ev_versions WHERE at_ms < ?1 GROUP BY cluster, uid HAVING count(*) > 1 OR min(seq) > 0")
            .map_err(sql)?;
        let rows = st
            .query_map(params![cutoff], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(sql)?;
        rows.collect::<rusqlite::Result<_>>().map_err(sql)?
    };
    for (cl, uid, keep) in old {
        let has_full: bool = tx
            .query_row(
                "SELECT full IS NOT NULL FROM ev_versions WHERE cluster = ?1 AND uid = ?2 AND seq = ?3",
                params![cl, uid, keep],
                |r| r.get(0),
            )
            .map_err(sql)?;
        if !has_full {
            let obj = rebuild(sh, &tx, &cl, &uid, keep)?;
            let blob = sh.compress(&obj)?;
            tx.execute(
                "UPDATE ev_versions SET full = ?4 WHERE cluster = ?1 AND uid = ?2 AND seq = ?3",
                params![cl, uid, keep, blob],
            )
            .map_err(sql)?;
        }
        deleted += tx
            .execute(
                "DELETE FROM ev_versions WHERE cluster = ?1 AND uid = ?2 AND seq < ?3",
                params![cl, uid, keep],
            )
            .map_err(sql)? as u64;
    }
    tx.commit().map_err(sql)?;
    Ok(deleted)
}

#[async_trait]
impl EventStore for SqliteEventStore {
    async fn secret_key(&self) -> Result<kube_insight_core::event::SecretKey> {
        self.write(move |sh, c| {
            let bytes = super::schema::secret_key(c).map_err(|e| sh.sql(e))?;
            kube_insight_core::event::SecretKey::from_bytes(&bytes).ok_or_else(|| {
                kube_insight_store::error::Error::Corrupt(format!(
                    "{}: install_keys secret_hash is {} bytes, not 32",
                    sh.path_str,
                    bytes.len()
                ))
            })
        })
        .await
    }

    async fn write_events(&self, events: Vec<KubeEvent>) -> Result<EventWriteOutcome> {
        if events.is_empty() {
            return Ok(EventWriteOutcome::default());
        }
        self.write(move |sh, c| write_events_tx(sh, c, events))
            .await
    }

    async fn write_objects(&self, writes: Vec<ObjectWrite>) -> Result<ObjectWriteOutcome> {
        if writes.is_empty() {
            return Ok(ObjectWriteOutcome::default());
        }
        self.write(move |sh, c| write_objects_tx(sh, c, writes))
            .await
    }

    async fn query_events(&self, query: &EventQuery) -> Result<Vec<KubeEvent>> {
        let q = query.clone();
        self.read(move |sh, c| query_events_q(sh, c, &q)).await
    }

    async fn changes(&self, query: &ChangeQuery) -> Result<Vec<ChangeRow>> {
        let q = query.clone();
        self.read(move |sh, c| changes_q(sh, c, &q)).await
    }

    async fn object_at(
        &self,
        cluster: Option<&str>,
        kind: &str,
        namespace: &str,
        name: &str,
        at_ms: i64,
    ) -> Result<Option<ObjectAt>> {
        let (cl, k, ns, n) = (
            cluster.map(str::to_string),
            kind.to_string(),
            namespace.to_string(),
            name.to_string(),
        );
        self.read(move |sh, c| object_at_q(sh, c, cl.as_deref(), &k, &ns, &n, at_ms))
            .await
    }

    async fn live_objects(
        &self,
        cluster: &str,
        group: &str,
        kind: &str,
    ) -> Result<Vec<LiveObject>> {
        let (cl, g, k) = (cluster.to_string(), group.to_string(), kind.to_string());
        self.read(move |sh, c| {
            let sql = |e| sh.sql(e);
            let mut st = c
                .prepare_cached(
                    "SELECT uid, namespace, name, rv, at_ms, object FROM ev_latest WHERE cluster = ?1 AND grp = ?2 AND kind = ?3 AND deleted = 0",
                )
                .map_err(sql)?;
            let rows = st
                .query_map(params![cl, g, k], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?, r.get::<_, i64>(4)?, r.get::<_, Vec<u8>>(5)?))
                })
                .map_err(sql)?;
            let mut out = Vec::new();
            for r in rows {
                let (uid, namespace, name, resource_version, at_ms, blob) = r.map_err(sql)?;
                out.push(LiveObject {
                    uid,
                    namespace,
                    name,
                    resource_version,
                    at_ms,
                    object: sh.decompress(&blob)?,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn set_checkpoint(
        &self,
        cluster: &str,
        group: &str,
        kind: &str,
        cp: WatchCheckpoint,
    ) -> Result<()> {
        let (cl, g, k) = (cluster.to_string(), group.to_string(), kind.to_string());
        self.write(move |sh, c| {
            c.execute(
                "INSERT INTO ev_checkpoints (cluster, grp, kind, rv, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(cluster, grp, kind) DO UPDATE SET rv = excluded.rv, at_ms = max(at_ms, excluded.at_ms)",
                params![cl, g, k, cp.resource_version, cp.at_ms],
            )
            .map_err(|e| sh.sql(e))?;
            Ok(())
        })
        .await
    }

    async fn checkpoint(
        &self,
        cluster: &str,
        group: &str,
        kind: &str,
    ) -> Result<Option<WatchCheckpoint>> {
        let (cl, g, k) = (cluster.to_string(), group.to_string(), kind.to_string());
        self.read(move |sh, c| {
            c.query_row(
                "SELECT rv, at_ms FROM ev_checkpoints WHERE cluster = ?1 AND grp = ?2 AND kind = ?3",
                params![cl, g, k],
                |r| {
                    Ok(WatchCheckpoint {
                        resource_version: r.get(0)?,
                        at_ms: r.get(1)?,
                    })
                },
            )
            .optional()
            .map_err(|e| sh.sql(e))
        })
        .await
    }

    async fn maintain_events(&self, now_ms: i64) -> Result<u64> {
        let now = now_ms.max(self.shared.now_floor.fetch_max(now_ms, Ordering::SeqCst));
        self.write(move |sh, c| maintain_tx(sh, c, now)).await
    }
}
