//! Logs in the embedded SQLite store ([`SqliteLogStore`]).
//!
//! # Layout (tables prefixed `log_`, in the same file as the metrics)
//! ```sql
//! log_streams(id INTEGER PRIMARY KEY, hash, cluster, namespace, pod, container,
//!             workload_kind, workload, meta TEXT,   -- labels, node, image, ids: once per stream
//!             UNIQUE(cluster, namespace, pod, container))
//! log_blocks(id INTEGER PRIMARY KEY, stream_id, bucket, tier, first_seq,
//!            min_ns, max_ns, count, raw_bytes, levels BLOB, data BLOB)
//! log_batches(hash BLOB PRIMARY KEY, at_ms)        -- content hashes of stored batches (retries)
//! ```
//! A block holds records of one stream within one hour bucket (by record
//! time), sorted by time. Its data is two frames, each zstd or raw: the
//! *meta* column (time deltas, flags with stream / partial / level, lengths)
//! and the *text* (lines, then fields). A rate query reads only the meta
//! frame; `contains` runs once over the whole decompressed text.
//!
//! # Write path
//! One writer thread owns the write connection and drains a bounded queue,
//! committing several batches per transaction (group commit, `synchronous =
//! FULL`): a batch is answered `Ok` only once committed, and is then
//! searchable. A failed transaction stores nothing of any of its batches.
//! Each batch's content hash goes to `log_batches` in the same transaction,
//! so a retry is recognised and stored once.
//!
//! Each batch writes one raw *tier 0* block per (stream, bucket). Blocks are
//! merged size-tiered: when a (stream, bucket) has [`SqliteLogConfig::fanout`]
//! blocks of one tier they become one block of the next tier, zstd
//! compressed; a block of at least [`SqliteLogConfig::seal_bytes`] raw, or
//! the final merge of a bucket closed for [`SqliteLogConfig::finalize_grace`]
//! (done by [`LogStore::maintain_logs`]), is sealed and never rewritten.
//! Every record is rewritten about log_fanout(1 MiB / request share) times.
//!
//! # Read path
//! Streams are resolved by key (never a scan of lines), candidate blocks by
//! `(stream_id, max_ns)`, pruned by time and per-block level counts, then
//! merged newest first with a heap, loading a block only when its newest
//! record could be next. Reads run in one read transaction (a consistent
//! snapshot while the writer merges blocks).

use async_trait::async_trait;
use kube_insight_core::log::LogStreamKey;
use kube_insight_store::error::{Error, Result};
use kube_insight_store::log_block::{
    self, decode_block, encode_block, has_levels, level_mask, ns_bounds, Block, BlockStats,
    Candidate, ReadStream, RecView, LEVEL_SLOTS,
};
use kube_insight_store::logs::{
    stream_hash, LogBatch, LogMaintenance, LogPage, LogQuery, LogRatePoint, LogRateQuery,
    LogSelector, LogStore, LogWriteOutcome,
};
use kube_insight_store::StoreOptions;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::error::{SendTimeoutError, TrySendError};
use tokio::sync::{mpsc, oneshot};

/// The `log_*` tables; idempotent (`CREATE … IF NOT EXISTS`).
const DDL: &str = "
CREATE TABLE IF NOT EXISTS log_streams (
    id            INTEGER PRIMARY KEY,
    hash          INTEGER NOT NULL,
    cluster       TEXT NOT NULL,
    namespace     TEXT NOT NULL,
    pod           TEXT NOT NULL,
    container     TEXT NOT NULL,
    workload_kind TEXT NOT NULL,
    workload      TEXT NOT NULL,
    meta          TEXT NOT NULL,
    UNIQUE (cluster, namespace, pod, container)
);
CREATE INDEX IF NOT EXISTS log_streams_workload ON log_streams(cluster, namespace, workload);
CREATE INDEX IF NOT EXISTS log_streams_pod ON log_streams(pod);
CREATE TABLE IF NOT EXISTS log_blocks (
    id        INTEGER PRIMARY KEY,
    stream_id INTEGER NOT NULL,
    bucket    INTEGER NOT NULL,
    tier      INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    min_ns    INTEGER NOT NULL,
    max_ns    INTEGER NOT NULL,
    count     INTEGER NOT NULL,
    raw_bytes INTEGER NOT NULL,
    levels    BLOB NOT NULL,
    data      BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS log_blocks_stream ON log_blocks(stream_id, max_ns);
CREATE INDEX IF NOT EXISTS log_blocks_max ON log_blocks(max_ns);
CREATE TABLE IF NOT EXISTS log_batches (
    hash  BLOB PRIMARY KEY,
    at_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS log_batches_at ON log_batches(at_ms);
";

/// Creates the `log_*` tables and indexes if they are missing. Idempotent;
/// the main schema's `apply` calls it inside its migration transaction.
pub fn create_schema(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(DDL)
}

/// Width of a time bucket: a block never spans two.
const BUCKET_NS: i64 = 3_600 * 1_000_000_000;
/// The tier of a sealed block (never merged again).
const SEALED: i64 = 255;
/// Tiers below sealed that are tracked.
const TIERS: usize = 8;

/// Tuning of the logs backend (the defaults suit production).
#[derive(Debug, Clone)]
pub struct SqliteLogConfig {
    /// Batches waiting for the writer; beyond it a write waits up to
    /// `enqueue_timeout`, then gets [`Error::Overloaded`] (429).
    pub queue_capacity: usize,
    pub enqueue_timeout: Duration,
    /// How long a write waits for its commit before [`Error::Unavailable`]
    /// (it may still land; a retry is recognised).
    pub write_timeout: Duration,
    pub busy_timeout: Duration,
    pub read_connections: usize,
    /// Blocks of one tier merged into one of the next.
    pub fanout: usize,
    /// A block with at least this many raw bytes is sealed.
    pub seal_bytes: usize,
    /// Raw bytes rewritten per merge transaction; merges run between write
    /// groups and when idle, so a write never waits for more than one slice.
    pub merge_slice_bytes: usize,
    /// How long after its end an hour bucket is finalized (one sealed block
    /// per stream, unless late records arrive).
    pub finalize_grace: Duration,
    /// How long batch hashes are kept to recognise retries.
    pub dedup_window: Duration,
    /// Records per group commit (more batches wait for the next one).
    pub max_group_records: usize,
    /// Streams one query may cover, and candidate blocks it may consider.
    pub max_query_streams: usize,
    pub max_query_blocks: usize,
    pub zstd_level: i32,
}

impl Default for SqliteLogConfig {
    fn default() -> Self {
        SqliteLogConfig {
            queue_capacity: 64,
            enqueue_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(30),
            busy_timeout: Duration::from_secs(5),
            read_connections: 4,
            fanout: 16,
            seal_bytes: 1 << 20,
            merge_slice_bytes: 4 << 20,
            finalize_grace: Duration::from_secs(10 * 60),
            dedup_window: Duration::from_secs(6 * 3600),
            max_group_records: 50_000,
            max_query_streams: 50_000,
            max_query_blocks: 1_000_000,
            zstd_level: 3,
        }
    }
}

struct Shared {
    path: PathBuf,
    path_str: String,
    retention_ms: i64,
    config: SqliteLogConfig,
    /// The largest `now_ms` given to maintenance (tests inject time).
    now_floor: AtomicI64,
    pool: super::ReadPool,
}

impl Shared {
    fn now_ms(&self) -> i64 {
        kube_insight_core::time::now_ms().max(self.now_floor.load(Ordering::SeqCst))
    }

    fn sql(&self, e: rusqlite::Error) -> Error {
        sql_error(&self.path_str, e)
    }
}

use super::schema::sql_error;

/// A copy of an error for each batch of a failed group.
fn clone_error(e: &Error) -> Error {
    match e {
        Error::Unavailable(m) => Error::Unavailable(m.clone()),
        Error::Overloaded(m) => Error::Overloaded(m.clone()),
        Error::Sqlite { path, source } => Error::Sqlite {
            path: path.clone(),
            source: match source.downcast_ref::<rusqlite::Error>() {
                Some(rusqlite::Error::SqliteFailure(f, m)) => {
                    Box::new(rusqlite::Error::SqliteFailure(*f, m.clone()))
                }
                _ => Box::new(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
                    Some(source.to_string()),
                )),
            },
        },
        other => Error::Unavailable(other.to_string()),
    }
}

/// What the logs take on disk ([`SqliteLogStore::disk_usage`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogDiskUsage {
    /// The database file (every signal), and its free pages.
    pub file_bytes: u64,
    pub free_bytes: u64,
    pub wal_bytes: u64,
    /// Pages of the `log_*` tables and indexes, when SQLite has `dbstat`.
    pub log_table_bytes: Option<u64>,
    /// Stored block bytes, and the raw (uncompressed) bytes they hold.
    pub block_data_bytes: u64,
    pub raw_bytes: u64,
}

enum Msg {
    Write {
        batch: LogBatch,
        hash: u128,
        reply: oneshot::Sender<Result<LogWriteOutcome>>,
    },
    Maintain {
        now_ms: i64,
        reply: oneshot::Sender<Result<LogMaintenance>>,
    },
}

/// The logs backend over its own connections to the store's SQLite file.
/// Dropping it stops the writer thread after the queued work.
pub struct SqliteLogStore {
    shared: Arc<Shared>,
    tx: Option<mpsc::Sender<Msg>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for SqliteLogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteLogStore")
            .field("path", &self.shared.path_str)
            .finish_non_exhaustive()
    }
}

impl SqliteLogStore {
    /// Opens (creating if needed) the database at `path`, creates the
    /// `log_*` tables and starts the writer thread.
    pub async fn open(path: &Path, options: StoreOptions) -> Result<Self> {
        Self::open_with(path, options, SqliteLogConfig::default()).await
    }

    pub async fn open_with(
        path: &Path,
        options: StoreOptions,
        config: SqliteLogConfig,
    ) -> Result<Self> {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || Self::open_blocking(path, options, config))
            .await
            .map_err(|e| Error::Unavailable(format!("opening the sqlite log store: {e}")))?
    }

    fn open_blocking(
        path: PathBuf,
        options: StoreOptions,
        config: SqliteLogConfig,
    ) -> Result<Self> {
        let path_str = path.display().to_string();
        let sq = |e| sql_error(&path_str, e);
        let conn = super::schema::open_connection(&path, config.busy_timeout)?;
        conn.execute_batch("PRAGMA cache_size = -16384;")
            .map_err(sq)?;
        create_schema(&conn).map_err(sq)?;
        let shared = Arc::new(Shared {
            path: path.clone(),
            path_str: path_str.clone(),
            retention_ms: options.retention.logs.as_millis().min(i64::MAX as u128) as i64,
            config: config.clone(),
            now_floor: AtomicI64::new(i64::MIN),
            pool: super::ReadPool::new(
                path.clone(),
                config.busy_timeout,
                config.read_connections,
                16384,
            ),
        });
        let compressor = zstd::bulk::Compressor::new(config.zstd_level)
            .map_err(|e| Error::Unavailable(format!("starting zstd: {e}")))?;
        let mut writer = Writer {
            conn,
            shared: shared.clone(),
            streams: HashMap::new(),
            tiers: HashMap::new(),
            backlog: Default::default(),
            compressor,
        };
        writer.load_tiers()?;
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let thread = std::thread::Builder::new()
            .name("kube-insight-sqlite-logs".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| Error::Unavailable(format!("starting the sqlite log writer: {e}")))?;
        tracing::info!(path = %path_str, "sqlite log store open");
        Ok(SqliteLogStore {
            shared,
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Bytes the logs take in the database file (blocks, streams, hashes,
    /// with their indexes), and the file's own numbers.
    pub async fn disk_usage(&self) -> Result<LogDiskUsage> {
        self.read(|s, c| {
            let q = |sql: &str| c.query_row(sql, [], |r| r.get::<_, i64>(0)).map_err(|e| s.sql(e));
            let page = q("PRAGMA page_size")?;
            let pages = q("PRAGMA page_count")?;
            let free = q("PRAGMA freelist_count")?;
            let log_bytes = c
                .query_row(
                    "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name LIKE 'log\\_%' ESCAPE '\\' OR name LIKE 'sqlite_autoindex_log\\_%' ESCAPE '\\'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .ok();
            let wal = std::fs::metadata(format!("{}-wal", s.path_str)).map_or(0, |m| m.len());
            Ok(LogDiskUsage {
                file_bytes: (page * pages) as u64,
                free_bytes: (page * free) as u64,
                wal_bytes: wal,
                log_table_bytes: log_bytes.map(|b| b as u64),
                block_data_bytes: q("SELECT coalesce(sum(length(data)), 0) FROM log_blocks")? as u64,
                raw_bytes: q("SELECT coalesce(sum(raw_bytes), 0) FROM log_blocks")? as u64,
            })
        })
        .await
    }

    async fn send(&self, msg: Msg, wait: Option<Duration>) -> Result<()> {
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| Error::Unavailable("the sqlite log store is closed".into()))?;
        let stopped = || Error::Unavailable("the sqlite log writer thread has stopped".into());
        match tx.try_send(msg) {
            Ok(()) => Ok(()),
            Err(TrySendError::Closed(_)) => Err(stopped()),
            Err(TrySendError::Full(msg)) => match wait {
                None => tx.send(msg).await.map_err(|_| stopped()),
                Some(wait) => match tx.send_timeout(msg, wait).await {
                    Ok(()) => Ok(()),
                    Err(SendTimeoutError::Closed(_)) => Err(stopped()),
                    Err(SendTimeoutError::Timeout(_)) => Err(Error::Overloaded(format!(
                        "the log write queue is full ({} batches waiting)",
                        self.shared.config.queue_capacity
                    ))),
                },
            },
        }
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Shared, &mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = shared.pool.get().map_err(|e| shared.sql(e))?;
            f(&shared, &mut conn)
        })
        .await
        .map_err(|e| Error::Unavailable(format!("sqlite log read task failed: {e}")))?
    }
}

impl Drop for SqliteLogStore {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!(path = %self.shared.path_str, "sqlite log writer thread panicked");
            }
        }
    }
}

#[async_trait]
impl LogStore for SqliteLogStore {
    async fn write_logs(&self, batch: LogBatch) -> Result<LogWriteOutcome> {
        if batch.streams.iter().all(|s| s.records.is_empty()) {
            return Ok(LogWriteOutcome::default());
        }
        let hash = batch.content_hash();
        let (reply, rx) = oneshot::channel();
        self.send(
            Msg::Write { batch, hash, reply },
            Some(self.shared.config.enqueue_timeout),
        )
        .await?;
        match tokio::time::timeout(self.shared.config.write_timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(Error::Unavailable("the sqlite log writer stopped before answering".into())),
            Err(_) => Err(Error::Unavailable(format!(
                "the log write was not committed within {:?}; it may still be stored, and a retry is recognised",
                self.shared.config.write_timeout
            ))),
        }
    }

    async fn query_logs(&self, query: &LogQuery) -> Result<LogPage> {
        let q = query.clone();
        self.read(move |s, c| query_page(s, c, &q)).await
    }

    async fn log_rate(&self, query: &LogRateQuery) -> Result<Vec<LogRatePoint>> {
        let q = query.clone();
        self.read(move |s, c| rate(s, c, &q)).await
    }

    async fn maintain_logs(&self, now_ms: i64) -> Result<LogMaintenance> {
        let (reply, rx) = oneshot::channel();
        self.send(Msg::Maintain { now_ms, reply }, None).await?;
        rx.await.map_err(|_| {
            Error::Unavailable("the sqlite log writer stopped during maintenance".into())
        })?
    }
}

// ---------------------------------------------------------------------------
// Block codec

// ---------------------------------------------------------------------------
// Writer

struct StreamEntry {
    id: i64,
    meta_hash: u64,
}

struct Writer {
    conn: Connection,
    shared: Arc<Shared>,
    streams: HashMap<LogStreamKey, StreamEntry>,
    /// Unsealed blocks per (stream id, bucket) and tier.
    tiers: HashMap<(i64, i64), [u32; TIERS]>,
    /// (stream, bucket)s with a full tier, waiting to be merged.
    backlog: std::collections::BTreeSet<(i64, i64)>,
    compressor: zstd::bulk::Compressor<'static>,
}

/// What a committed group changes in the writer's memory.
#[derive(Default)]
struct GroupEffects {
    new_streams: Vec<(LogStreamKey, StreamEntry)>,
    tier0: Vec<(i64, i64)>,
}

impl Writer {
    fn load_tiers(&mut self) -> Result<()> {
        self.tiers.clear();
        let mut st = self
            .conn
            .prepare("SELECT stream_id, bucket, tier, count(*) FROM log_blocks WHERE tier < ?1 GROUP BY 1, 2, 3")
            .map_err(|e| self.shared.sql(e))?;
        let rows = st
            .query_map([SEALED], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .map_err(|e| self.shared.sql(e))?;
        for row in rows {
            let (sid, bucket, tier, n) = row.map_err(|e| self.shared.sql(e))?;
            let t = usize::try_from(tier).unwrap_or(0).min(TIERS - 1);
            self.tiers.entry((sid, bucket)).or_default()[t] += n as u32;
        }
        drop(st);
        let fanout = self.shared.config.fanout.max(2) as u32;
        self.backlog = self
            .tiers
            .iter()
            .filter(|(_, c)| c.iter().any(|&n| n >= fanout))
            .map(|(k, _)| *k)
            .collect();
        Ok(())
    }

    fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let max_records = self.shared.config.max_group_records.max(1);
        let mut next: Option<Msg> = None;
        loop {
            let msg = match next.take() {
                Some(m) => m,
                // Merges wait for idle moments, a bounded slice at a time,
                // so that writes are never stuck behind a long merge.
                None if !self.backlog.is_empty() => match rx.try_recv() {
                    Ok(m) => m,
                    Err(mpsc::error::TryRecvError::Empty) => {
                        if !self.compact_slice() {
                            // Failing: wait for work rather than spin.
                            std::thread::sleep(Duration::from_millis(100));
                        }
                        continue;
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => return,
                },
                None => match rx.blocking_recv() {
                    Some(m) => m,
                    None => return,
                },
            };
            match msg {
                Msg::Write { batch, hash, reply } => {
                    let mut records = batch.record_count();
                    let mut group = vec![(batch, hash, reply)];
                    while records < max_records {
                        match rx.try_recv() {
                            Ok(Msg::Write { batch, hash, reply }) => {
                                records += batch.record_count();
                                group.push((batch, hash, reply));
                            }
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.write_group(group);
                }
                Msg::Maintain { now_ms, reply } => {
                    let r = self.maintain(now_ms);
                    if let Err(e) = &r {
                        tracing::error!(path = %self.shared.path_str, error = %e, "log maintenance failed");
                    }
                    let _ = reply.send(r);
                }
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn write_group(
        &mut self,
        group: Vec<(LogBatch, u128, oneshot::Sender<Result<LogWriteOutcome>>)>,
    ) {
        let started = std::time::Instant::now();
        let now_ms = self.shared.now_ms();
        let cutoff_ns = now_ms
            .saturating_sub(self.shared.retention_ms)
            .saturating_mul(1_000_000);
        let (batches, replies): (Vec<_>, Vec<_>) =
            group.into_iter().map(|(b, h, r)| ((b, h), r)).unzip();
        let result = self.commit_group(batches, now_ms, cutoff_ns);
        match result {
            Ok((outcomes, effects)) => {
                for (k, e) in effects.new_streams {
                    self.streams.insert(k, e);
                }
                let mut touched = Vec::with_capacity(effects.tier0.len());
                for key in effects.tier0 {
                    self.tiers.entry(key).or_default()[0] += 1;
                    touched.push(key);
                }
                let written: u64 = outcomes.iter().map(|o| o.records_written).sum();
                for (reply, o) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(o));
                }
                tracing::debug!(
                    records = written,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "log group committed"
                );
                let fanout = self.shared.config.fanout.max(2) as u32;
                for key in touched {
                    if self
                        .tiers
                        .get(&key)
                        .is_some_and(|c| c.iter().any(|&n| n >= fanout))
                    {
                        self.backlog.insert(key);
                    }
                }
                // One slice after every group keeps the backlog moving
                // under constant load.
                if !self.backlog.is_empty() {
                    self.compact_slice();
                }
            }
            Err(e) => {
                tracing::warn!(path = %self.shared.path_str, error = %e, batches = replies.len(), "log write transaction failed; nothing of it was stored");
                for reply in replies {
                    let _ = reply.send(Err(clone_error(&e)));
                }
            }
        }
    }

    fn commit_group(
        &mut self,
        batches: Vec<(LogBatch, u128)>,
        now_ms: i64,
        cutoff_ns: i64,
    ) -> Result<(Vec<LogWriteOutcome>, GroupEffects)> {
        let path = self.shared.path_str.clone();
        let sq = |e| sql_error(&path, e);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sq)?;
        let mut effects = GroupEffects::default();
        let mut group_new: HashMap<LogStreamKey, usize> = HashMap::new();
        let mut seen: HashSet<u128> = HashSet::new();
        let mut outcomes = Vec::with_capacity(batches.len());
        let mut next_seq: i64 = tx
            .query_row("SELECT coalesce(max(id), 0) + 1 FROM log_blocks", [], |r| {
                r.get(0)
            })
            .map_err(sq)?;
        for (batch, hash) in batches {
            let mut o = LogWriteOutcome::default();
            let hash_bytes = hash.to_be_bytes();
            let dup = seen.contains(&hash)
                || tx
                    .prepare_cached("SELECT 1 FROM log_batches WHERE hash = ?1")
                    .and_then(|mut s| s.query_row([&hash_bytes[..]], |_| Ok(())).optional())
                    .map_err(sq)?
                    .is_some();
            if dup {
                o.records_duplicate = batch.record_count() as u64;
                outcomes.push(o);
                continue;
            }
            seen.insert(hash);
            tx.prepare_cached("INSERT INTO log_batches (hash, at_ms) VALUES (?1, ?2)")
                .and_then(|mut s| s.execute(params![&hash_bytes[..], now_ms]))
                .map_err(sq)?;
            for mut st in batch.streams {
                st.key.cluster.clone_from(&batch.cluster);
                let before = st.records.len();
                st.records.retain(|r| r.timestamp_ns >= cutoff_ns);
                o.records_too_old += (before - st.records.len()) as u64;
                if st.records.is_empty() {
                    continue;
                }
                let meta_json = serde_json::to_string(&st.meta).map_err(|e| {
                    Error::InvalidQuery(format!(
                        "stream metadata of {}/{}: {e}",
                        st.key.namespace, st.key.pod
                    ))
                })?;
                let meta_hash = xxhash_rust::xxh3::xxh3_64(meta_json.as_bytes());
                let known = self
                    .streams
                    .get(&st.key)
                    .map(|e| (e.id, e.meta_hash))
                    .or_else(|| {
                        group_new.get(&st.key).map(|&i| {
                            (
                                effects.new_streams[i].1.id,
                                effects.new_streams[i].1.meta_hash,
                            )
                        })
                    });
                let id = match known {
                    Some((id, h)) => {
                        if h != meta_hash {
                            tx.prepare_cached("UPDATE log_streams SET meta = ?2, workload_kind = ?3, workload = ?4 WHERE id = ?1")
                                .and_then(|mut s| {
                                    s.execute(params![
                                        id,
                                        meta_json,
                                        st.meta.workload.as_ref().map_or("", |w| w.kind.as_str()),
                                        st.meta.workload.as_ref().map_or("", |w| w.name.as_str()),
                                    ])
                                })
                                .map_err(sq)?;
                            push_stream(
                                &mut effects,
                                &mut group_new,
                                st.key.clone(),
                                id,
                                meta_hash,
                            );
                        }
                        id
                    }
                    None => {
                        let existing: Option<(i64, String)> = tx
                            .prepare_cached("SELECT id, meta FROM log_streams WHERE cluster = ?1 AND namespace = ?2 AND pod = ?3 AND container = ?4")
                            .and_then(|mut s| {
                                s.query_row(params![st.key.cluster, st.key.namespace, st.key.pod, st.key.container], |r| Ok((r.get(0)?, r.get(1)?)))
                                    .optional()
                            })
                            .map_err(sq)?;
                        let id = match existing {
                            Some((id, old)) => {
                                if old != meta_json {
                                    tx.prepare_cached("UPDATE log_streams SET meta = ?2, workload_kind = ?3, workload = ?4 WHERE id = ?1")
                                        .and_then(|mut s| {
                                            s.execute(params![
                                                id,
                                                meta_json,
                                                st.meta.workload.as_ref().map_or("", |w| w.kind.as_str()),
                                                st.meta.workload.as_ref().map_or("", |w| w.name.as_str()),
                                            ])
                                        })
                                        .map_err(sq)?;
                                }
                                id
                            }
                            None => {
                                o.streams_created += 1;
                                tx.prepare_cached(
                                    "INSERT INTO log_streams (hash, cluster, namespace, pod, container, workload_kind, workload, meta)
                                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                                )
                                .and_then(|mut s| {
                                    s.execute(params![
                                        stream_hash(&st.key) as i64,
                                        st.key.cluster,
                                        st.key.namespace,
                                        st.key.pod,
                                        st.key.container,
                                        st.meta.workload.as_ref().map_or("", |w| w.kind.as_str()),
                                        st.meta.workload.as_ref().map_or("", |w| w.name.as_str()),
                                        meta_json,
                                    ])
                                })
                                .map_err(sq)?;
                                tx.last_insert_rowid()
                            }
                        };
                        push_stream(&mut effects, &mut group_new, st.key.clone(), id, meta_hash);
                        id
                    }
                };
                st.records.sort_by_key(|r| r.timestamp_ns);
                let views: Vec<RecView<'_>> = st.records.iter().map(RecView::of).collect();
                let mut start = 0;
                while start < views.len() {
                    let bucket = views[start].ts.div_euclid(BUCKET_NS);
                    let end = start
                        + views[start..].partition_point(|v| v.ts.div_euclid(BUCKET_NS) == bucket);
                    let (data, stats) = encode_block(&views[start..end], None);
                    insert_block(&tx, id, bucket, 0, next_seq, &stats, &data).map_err(sq)?;
                    next_seq += 1;
                    effects.tier0.push((id, bucket));
                    o.records_written += (end - start) as u64;
                    start = end;
                }
            }
            outcomes.push(o);
        }
        tx.commit().map_err(sq)?;
        Ok((outcomes, effects))
    }

    /// Merges full tiers of (stream, bucket)s from the backlog, lowest tier
    /// first, in one transaction, until about
    /// [`SqliteLogConfig::merge_slice_bytes`] raw bytes were rewritten.
    /// Returns false when nothing could be done (the transaction failed).
    fn compact_slice(&mut self) -> bool {
        let fanout = self.shared.config.fanout.max(2) as u32;
        let budget = self.shared.config.merge_slice_bytes.max(1);
        let seal = self.shared.config.seal_bytes;
        let path = self.shared.path_str.clone();
        let tx = match self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
        {
            Ok(tx) => tx,
            Err(e) => {
                tracing::warn!(path = %path, error = %e, "log block merge postponed");
                return false;
            }
        };
        let mut done: Vec<((i64, i64), [u32; TIERS])> = Vec::new();
        let mut rewritten = 0usize;
        let mut result = Ok(());
        'keys: while rewritten < budget {
            let Some(key) = self.backlog.pop_first() else {
                break;
            };
            let mut counts = self.tiers.get(&key).copied().unwrap_or_default();
            while let Some(tier) = counts.iter().position(|&c| c >= fanout) {
                match merge_blocks(
                    &tx,
                    &path,
                    &mut self.compressor,
                    seal,
                    key,
                    Some(tier as i64),
                ) {
                    Ok(m) if m.removed.is_empty() => counts[tier] = 0, // stale counter
                    Ok(m) => {
                        m.apply(&mut counts);
                        rewritten += m.raw_bytes;
                    }
                    Err(e) => {
                        self.backlog.insert(key);
                        result = Err(e);
                        break 'keys;
                    }
                }
                if rewritten >= budget {
                    break;
                }
            }
            if counts.iter().any(|&c| c >= fanout) {
                self.backlog.insert(key);
            }
            done.push((key, counts));
        }
        if let Err(e) = result.and_then(|()| tx.commit().map_err(|e| sql_error(&path, e))) {
            // Rolled back: the counters stay as they were; keys are retried.
            tracing::error!(path = %path, error = %e, "log block merge failed; retried later");
            for (key, _) in done {
                self.backlog.insert(key);
            }
            return false;
        }
        for (key, counts) in done {
            if counts.iter().all(|&c| c == 0) {
                self.tiers.remove(&key);
            } else {
                self.tiers.insert(key, counts);
            }
        }
        true
    }

    fn maintain(&mut self, now_ms: i64) -> Result<LogMaintenance> {
        // The merge backlog first, so that maintenance leaves none behind.
        while !self.backlog.is_empty() {
            if !self.compact_slice() {
                break;
            }
        }
        self.shared.now_floor.fetch_max(now_ms, Ordering::SeqCst);
        let mut report = LogMaintenance::default();
        // 1. Final merge of buckets closed for the grace period.
        let grace_ns = self
            .shared
            .config
            .finalize_grace
            .as_nanos()
            .min(i64::MAX as u128) as i64;
        let now_ns = now_ms.saturating_mul(1_000_000);
        let closed: Vec<(i64, i64)> = self
            .tiers
            .keys()
            .filter(|(_, b)| (b + 1).saturating_mul(BUCKET_NS).saturating_add(grace_ns) < now_ns)
            .copied()
            .collect();
        if !closed.is_empty() {
            let seal = self.shared.config.seal_bytes;
            let path = self.shared.path_str.clone();
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| sql_error(&path, e))?;
            for key in &closed {
                let m = merge_blocks(&tx, &path, &mut self.compressor, seal, *key, None)?;
                report.blocks_merged += m.removed.len() as u64;
            }
            tx.commit().map_err(|e| sql_error(&path, e))?;
            for key in &closed {
                self.tiers.remove(key);
                self.backlog.remove(key);
            }
        }
        // 2. Retention.
        let cutoff_ns = now_ms
            .saturating_sub(self.shared.retention_ms)
            .saturating_mul(1_000_000);
        let dedup_ms = self
            .shared
            .config
            .dedup_window
            .as_millis()
            .min(i64::MAX as u128) as i64;
        let path = self.shared.path_str.clone();
        let sq = |e| sql_error(&path, e);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sq)?;
        let blocks = tx
            .execute("DELETE FROM log_blocks WHERE max_ns < ?1", [cutoff_ns])
            .map_err(sq)?;
        let streams = tx
            .execute(
                "DELETE FROM log_streams WHERE NOT EXISTS (SELECT 1 FROM log_blocks b WHERE b.stream_id = log_streams.id)",
                [],
            )
            .map_err(sq)?;
        let hashes = tx
            .execute(
                "DELETE FROM log_batches WHERE at_ms < ?1",
                [now_ms.saturating_sub(dedup_ms)],
            )
            .map_err(sq)?;
        tx.commit().map_err(sq)?;
        if blocks > 0 {
            self.load_tiers()?;
        }
        if streams > 0 {
            self.streams.clear();
        }
        report.rows_expired = (blocks + streams + hashes) as u64;
        if report.rows_expired > 0 || report.blocks_merged > 0 {
            tracing::info!(path = %self.shared.path_str, blocks_expired = blocks, streams_expired = streams, hashes_expired = hashes, blocks_merged = report.blocks_merged, "log maintenance");
        }
        Ok(report)
    }
}

/// What one merge did to a (stream, bucket)'s tier counters.
struct Merged {
    /// Tiers of the blocks merged away.
    removed: Vec<i64>,
    /// Tier of the new block, unless sealed.
    added: Option<i64>,
    /// Raw bytes rewritten.
    raw_bytes: usize,
}

impl Merged {
    fn apply(&self, counts: &mut [u32; TIERS]) {
        for &t in &self.removed {
            let t = usize::try_from(t).unwrap_or(0).min(TIERS - 1);
            counts[t] = counts[t].saturating_sub(1);
        }
        if let Some(t) = self.added {
            counts[usize::try_from(t).unwrap_or(0).min(TIERS - 1)] += 1;
        }
    }
}

/// Merges the unsealed blocks of `key` (of `tier`, or all of them when
/// `None`: the bucket's final merge, which seals) into one zstd block,
/// inside the caller's transaction. Records keep their order (by time, then
/// write order).
fn merge_blocks(
    tx: &rusqlite::Transaction<'_>,
    path: &str,
    compressor: &mut zstd::bulk::Compressor<'static>,
    seal_bytes: usize,
    key: (i64, i64),
    tier: Option<i64>,
) -> Result<Merged> {
    let (sid, bucket) = key;
    let sq = |e| sql_error(path, e);
    let (lo, hi) = tier.map_or((0, SEALED - 1), |t| (t, t));
    let rows: Vec<(i64, i64, i64, Vec<u8>)> = tx
        .prepare_cached(
            "SELECT id, first_seq, tier, data FROM log_blocks
             WHERE stream_id = ?1 AND bucket = ?2 AND tier >= ?3 AND tier <= ?4 ORDER BY first_seq, id",
        )
        .and_then(|mut st| {
            st.query_map(params![sid, bucket, lo, hi], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect()
        })
        .map_err(sq)?;
    if rows.is_empty() || (tier.is_some() && rows.len() < 2) {
        return Ok(Merged {
            removed: Vec::new(),
            added: None,
            raw_bytes: 0,
        });
    }
    let mut blocks = Vec::with_capacity(rows.len());
    for (id, _, _, data) in &rows {
        match decode_block(data, true) {
            Ok(b) => blocks.push(b),
            Err(e) => {
                tracing::error!(path, block_id = id, error = %e, "corrupt log block left out of a merge");
                blocks.push(Block::default());
            }
        }
    }
    let mut order: Vec<(i64, usize, usize)> = Vec::new();
    for (bi, b) in blocks.iter().enumerate() {
        order.extend((0..b.ts.len()).map(|i| (b.ts[i], bi, i)));
    }
    // Blocks are in write order, so equal times keep it.
    order.sort_unstable();
    let views: Vec<RecView<'_>> = order.iter().map(|&(_, bi, i)| blocks[bi].view(i)).collect();
    let raw: usize = views
        .iter()
        .map(|v| v.line.len() + v.fields.map_or(0, <[u8]>::len))
        .sum();
    let new_tier = match tier {
        None => SEALED,
        Some(_) if raw >= seal_bytes => SEALED,
        Some(t) => (t + 1).min(TIERS as i64 - 1),
    };
    let first_seq = rows.iter().map(|r| r.1).min().unwrap_or(0);
    let (data, stats) = encode_block(&views, Some(compressor));
    {
        let mut del = tx
            .prepare_cached("DELETE FROM log_blocks WHERE id = ?1")
            .map_err(sq)?;
        for r in &rows {
            del.execute([r.0]).map_err(sq)?;
        }
    }
    if stats.count > 0 {
        insert_block(tx, sid, bucket, new_tier, first_seq, &stats, &data).map_err(sq)?;
    }
    Ok(Merged {
        removed: rows.iter().map(|r| r.2).collect(),
        added: (new_tier != SEALED && stats.count > 0).then_some(new_tier),
        raw_bytes: raw,
    })
}

fn push_stream(
    effects: &mut GroupEffects,
    group_new: &mut HashMap<LogStreamKey, usize>,
    key: LogStreamKey,
    id: i64,
    meta_hash: u64,
) {
    group_new.insert(key.clone(), effects.new_streams.len());
    effects
        .new_streams
        .push((key, StreamEntry { id, meta_hash }));
}

fn insert_block(
    tx: &rusqlite::Transaction<'_>,
    stream_id: i64,
    bucket: i64,
    tier: i64,
    first_seq: i64,
    st: &BlockStats,
    data: &[u8],
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO log_blocks (stream_id, bucket, tier, first_seq, min_ns, max_ns, count, raw_bytes, levels, data)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        stream_id,
        bucket,
        tier,
        first_seq,
        st.min_ns,
        st.max_ns,
        st.count as i64,
        st.raw_bytes as i64,
        st.levels_blob(),
        data
    ])?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Reads

struct StreamRow {
    id: i64,
    hash: u64,
    key: LogStreamKey,
    workload: Option<String>,
}

fn select_streams(s: &Shared, conn: &Connection, sel: &LogSelector) -> Result<Vec<StreamRow>> {
    let mut st = conn
        .prepare_cached(
            "SELECT id, hash, cluster, namespace, pod, container, workload FROM log_streams
             WHERE (?1 IS NULL OR cluster = ?1) AND (?2 IS NULL OR namespace = ?2)
               AND (?3 IS NULL OR workload = ?3) AND (?4 IS NULL OR pod = ?4)
               AND (?5 IS NULL OR container = ?5)
             LIMIT ?6",
        )
        .map_err(|e| s.sql(e))?;
    let max = s.config.max_query_streams;
    let rows = st
        .query_map(
            params![
                sel.cluster,
                sel.namespace,
                sel.workload,
                sel.pod,
                sel.container,
                max as i64 + 1
            ],
            |r| {
                let w: String = r.get(6)?;
                Ok(StreamRow {
                    id: r.get(0)?,
                    hash: r.get::<_, i64>(1)? as u64,
                    key: LogStreamKey {
                        cluster: r.get(2)?,
                        namespace: r.get(3)?,
                        pod: r.get(4)?,
                        container: r.get(5)?,
                    },
                    workload: (!w.is_empty()).then_some(w),
                })
            },
        )
        .map_err(|e| s.sql(e))?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(|e| s.sql(e))?;
    if rows.len() > max {
        return Err(Error::LimitExceeded {
            what: "log streams",
            limit: max,
        });
    }
    Ok(rows)
}

fn candidates(
    s: &Shared,
    conn: &Connection,
    streams: &[StreamRow],
    lo: i64,
    hi: i64,
    mask: &[bool; LEVEL_SLOTS],
) -> Result<Vec<Candidate<i64>>> {
    let mut st = conn
        .prepare_cached(
            "SELECT id, first_seq, max_ns, raw_bytes, levels FROM log_blocks
             WHERE stream_id = ?1 AND max_ns >= ?2 AND min_ns <= ?3",
        )
        .map_err(|e| s.sql(e))?;
    let mut out = Vec::new();
    for (si, stream) in streams.iter().enumerate() {
        let rows = st
            .query_map(params![stream.id, lo, hi], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Vec<u8>>(4)?,
                ))
            })
            .map_err(|e| s.sql(e))?;
        for row in rows {
            let (id, first_seq, max_ns, raw, levels) = row.map_err(|e| s.sql(e))?;
            if !has_levels(&levels, mask) {
                continue;
            }
            out.push(Candidate {
                id,
                stream: si,
                first_seq,
                max_ns,
                raw_bytes: raw.max(0) as usize,
            });
            if out.len() > s.config.max_query_blocks {
                return Err(Error::LimitExceeded {
                    what: "log blocks",
                    limit: s.config.max_query_blocks,
                });
            }
        }
    }
    Ok(out)
}

fn load_block(s: &Shared, conn: &Connection, id: i64, with_text: bool) -> Result<Block> {
    let data: Vec<u8> = conn
        .prepare_cached("SELECT data FROM log_blocks WHERE id = ?1")
        .and_then(|mut st| st.query_row([id], |r| r.get(0)))
        .map_err(|e| s.sql(e))?;
    decode_block(&data, with_text)
        .map_err(|e| Error::Corrupt(format!("log block {id} in {}: {e}", s.path_str)))
}

/// One read transaction: streams, candidate blocks, then the shared page
/// assembly ([`log_block::page`]) loading blocks from it.
fn query_page(s: &Shared, conn: &mut Connection, q: &LogQuery) -> Result<LogPage> {
    let tx = conn.transaction().map_err(|e| s.sql(e))?;
    let streams = select_streams(s, &tx, &q.selector)?;
    let cands = match log_block::page_bounds(q) {
        Some((lo, hi)) => candidates(s, &tx, &streams, lo, hi, &level_mask(&q.levels))?,
        None => Vec::new(),
    };
    let read: Vec<ReadStream> = streams.into_iter().map(ReadStream::from).collect();
    // One block at a time: a local read, nothing to overlap.
    futures::executor::block_on(log_block::page(&read, cands, q, 1, |c, text| {
        std::future::ready(load_block(s, &tx, c.id, text))
    }))
}

fn rate(s: &Shared, conn: &mut Connection, q: &LogRateQuery) -> Result<Vec<LogRatePoint>> {
    log_block::check_rate(q)?;
    let tx = conn.transaction().map_err(|e| s.sql(e))?;
    let streams = select_streams(s, &tx, &q.selector)?;
    let (lo, hi) = ns_bounds(&q.range);
    let cands = candidates(s, &tx, &streams, lo, hi, &level_mask(&q.levels))?;
    futures::executor::block_on(log_block::rate(cands, q, 1, |c, text| {
        std::future::ready(load_block(s, &tx, c.id, text))
    }))
}

impl From<StreamRow> for ReadStream {
    fn from(r: StreamRow) -> ReadStream {
        ReadStream {
            hash: r.hash,
            key: r.key,
            workload: r.workload,
        }
    }
}
