//! The embedded SQLite backend (`sqlite:///path/insight.db`): one node,
//! no server.
//!
//! # Layout
//! - **Head** ([`head`]): every known series in memory, labels interned,
//!   with an inverted index, plus per series the open 2 h windows as
//!   Gorilla appenders ([`kube_insight_store::chunk`]). Queryable as soon as a write
//!   returns.
//! - **`head_wal`**: every write appends one zstd row of its accepted
//!   samples, committed (`synchronous=FULL`) before the write is answered.
//!   At start-up the head is rebuilt from `series` and `head_wal`.
//! - **`chunks`**: immutable compressed chunks of closed windows, written by
//!   [`Store::maintain`]; `rollups` holds their 5-minute summaries.
//!
//! # Durability and visibility
//! One writer thread owns the write connection and drains a bounded queue,
//! committing several writes per transaction (group commit). A write is
//! answered `Ok` only after its `head_wal` row committed, and its samples are
//! applied to the head between the commit and the answer, so "Ok" implies
//! "durable and queryable". A failed commit changes nothing in memory.
//!
//! # Dedup
//! A (series, timestamp) pair is stored once: the writer checks the head,
//! the samples earlier in the same group, and for windows already compacted
//! the chunk in SQLite. A restart keeps this: replay dedups the same way.
//! A growing chunk is never rewritten; only a window that receives late
//! samples after compaction is merged and rewritten, at the next maintenance.

pub mod events;
mod hash;
mod head;
pub mod logs;
mod query;
mod schema;
mod symbols;
pub mod topology;
mod writer;

pub use schema::SCHEMA_VERSION;
pub use writer::ReplayStats;

use async_trait::async_trait;
use head::Head;
use kube_insight_core::{Entity, Labels, TimeSeries};
use kube_insight_store::error::{Error, Result};
use kube_insight_store::metrics::{
    EntityQuery, MetricBatch, MetricStore, SelectQuery, SeriesQuery, WriteOutcome,
};
use kube_insight_store::{MaintenanceReport, Store, StoreOptions, StoreStats};
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;
use tokio::sync::mpsc::error::{SendTimeoutError, TrySendError};
use tokio::sync::{mpsc, oneshot};
use writer::{Msg, PreparedBatch, PreparedSeries, Writer};

/// Opens the embedded store named by a `sqlite://` URL
/// (`KUBE_INSIGHT_STORE`) and applies its schema.
pub async fn open(url: &str, options: StoreOptions) -> Result<kube_insight_store::DynStore> {
    match kube_insight_store::StoreUrl::parse(url)? {
        kube_insight_store::StoreUrl::Sqlite { path } => {
            Ok(Arc::new(SqliteStore::open(&path, options).await?))
        }
        kube_insight_store::StoreUrl::Cassandra { .. } => Err(Error::InvalidUrl {
            url: url.to_string(),
            reason: "not a sqlite:// URL: this is the embedded backend".to_string(),
        }),
    }
}

/// Tuning of the SQLite backend (the defaults suit production).
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    /// Writes waiting for the writer thread; beyond it a write waits up to
    /// `enqueue_timeout`, then gets [`Error::Overloaded`].
    pub queue_capacity: usize,
    pub enqueue_timeout: Duration,
    /// How long a write waits for its commit before [`Error::Unavailable`]
    /// (it may still land; a retry is deduplicated).
    pub write_timeout: Duration,
    /// How long SQLite waits on a lock held by another connection.
    pub busy_timeout: Duration,
    /// Idle read connections kept open.
    pub read_connections: usize,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        SqliteConfig {
            queue_capacity: 64,
            enqueue_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(30),
            busy_timeout: Duration::from_secs(5),
            read_connections: 4,
        }
    }
}

/// State shared by the store handle, the writer thread and the readers.
pub(crate) struct Shared {
    pub path: PathBuf,
    pub path_str: String,
    pub options: StoreOptions,
    pub config: SqliteConfig,
    pub head: RwLock<Head>,
    /// The largest `now_ms` given to `maintain`: writes older than it minus
    /// retention are refused even if the wall clock is behind (tests inject
    /// time this way).
    pub now_floor: AtomicI64,
    pub pool: ReadPool,
}

impl Shared {
    fn sql_err(&self, e: rusqlite::Error) -> Error {
        Error::Sqlite {
            path: self.path_str.clone(),
            source: e.into(),
        }
    }
}

/// Read lock on the head; a panic elsewhere does not make it unusable.
pub(crate) fn lock_read(l: &RwLock<Head>) -> RwLockReadGuard<'_, Head> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn lock_write(l: &RwLock<Head>) -> RwLockWriteGuard<'_, Head> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

/// A few reusable read-only connections to the database file, shared by
/// every signal's store.
pub(crate) struct ReadPool {
    path: PathBuf,
    busy_timeout: Duration,
    max_idle: usize,
    /// Page cache per connection, in KiB.
    cache_kib: u32,
    idle: Mutex<Vec<Connection>>,
}

pub(crate) struct PooledConn<'a> {
    pool: &'a ReadPool,
    conn: Option<Connection>,
}

impl std::ops::Deref for PooledConn<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        // Always Some until drop.
        self.conn.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl std::ops::DerefMut for PooledConn<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        self.conn.as_mut().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for PooledConn<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            let mut idle = self.pool.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < self.pool.max_idle && c.is_autocommit() {
                idle.push(c);
            }
        }
    }
}

impl ReadPool {
    pub(crate) fn new(
        path: PathBuf,
        busy_timeout: Duration,
        max_idle: usize,
        cache_kib: u32,
    ) -> Self {
        ReadPool {
            path,
            busy_timeout,
            max_idle: max_idle.max(1),
            cache_kib,
            idle: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn get(&self) -> rusqlite::Result<PooledConn<'_>> {
        let c = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let c = match c {
            Some(c) => c,
            None => {
                let c = Connection::open(&self.path)?;
                c.busy_timeout(self.busy_timeout)?;
                c.execute_batch(&format!(
                    "PRAGMA query_only = 1; PRAGMA cache_size = -{};",
                    self.cache_kib
                ))?;
                c
            }
        };
        Ok(PooledConn {
            pool: self,
            conn: Some(c),
        })
    }
}

/// The non-metric signals' stores, opened before the metrics store.
struct Signals {
    logs: Arc<logs::SqliteLogStore>,
    events: Arc<events::SqliteEventStore>,
    topology: Arc<topology::SqliteTopologyStore>,
}

/// The embedded store. Cheap to share behind an `Arc`; dropping the last
/// handle stops the writer thread after it finished what was queued.
pub struct SqliteStore {
    /// The other signals: each has its own tables (and writer) in the same
    /// database file.
    logs: Arc<logs::SqliteLogStore>,
    events: Arc<events::SqliteEventStore>,
    topology: Arc<topology::SqliteTopologyStore>,
    shared: Arc<Shared>,
    tx: Option<mpsc::Sender<Msg>>,
    thread: Option<std::thread::JoinHandle<()>>,
    replay: ReplayStats,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.shared.path_str)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`: applies the schema,
    /// loads the series, replays `head_wal` and starts the writer thread.
    pub async fn open(path: &Path, options: StoreOptions) -> Result<Self> {
        Self::open_with(path, options, SqliteConfig::default()).await
    }

    pub async fn open_with(
        path: &Path,
        options: StoreOptions,
        config: SqliteConfig,
    ) -> Result<Self> {
        let path = path.to_path_buf();
        // The metrics schema first: it sets the file-wide pragmas
        // (auto_vacuum=INCREMENTAL only takes effect before any table exists).
        {
            let (p, busy) = (path.clone(), config.busy_timeout);
            tokio::task::spawn_blocking(move || -> Result<()> {
                let mut conn = schema::open_connection(&p, busy)?;
                schema::apply(&mut conn)
                    .map_err(|e| schema::sql_error(&p.display().to_string(), e))?;
                Ok(())
            })
            .await
            .map_err(|e| Error::Unavailable(format!("opening the sqlite store: {e}")))??;
        }
        let subs = Signals {
            logs: Arc::new(logs::SqliteLogStore::open(&path, options.clone()).await?),
            events: Arc::new(events::SqliteEventStore::open(&path, options.clone()).await?),
            topology: Arc::new(topology::SqliteTopologyStore::open(&path, options.clone()).await?),
        };
        tokio::task::spawn_blocking(move || Self::open_blocking(path, options, config, subs))
            .await
            .map_err(|e| Error::Unavailable(format!("opening the sqlite store: {e}")))?
    }

    fn open_blocking(
        path: PathBuf,
        options: StoreOptions,
        config: SqliteConfig,
        subs: Signals,
    ) -> Result<Self> {
        let path_str = path.display().to_string();
        let sq = |e: rusqlite::Error| Error::Sqlite {
            path: path_str.clone(),
            source: e.into(),
        };
        let window_ms = options.chunk_window.as_millis() as i64;
        let mut conn = schema::open_connection(&path, config.busy_timeout)?;
        let version = schema::apply(&mut conn).map_err(sq)?;
        if version != SCHEMA_VERSION {
            return Err(Error::SchemaMismatch {
                found: version,
                wanted: SCHEMA_VERSION,
            });
        }
        let mut head = Head::new(window_ms);
        let replay = writer::load(&conn, &mut head)?;
        let shared = Arc::new(Shared {
            pool: ReadPool::new(
                path.clone(),
                config.busy_timeout,
                config.read_connections,
                4096,
            ),
            path,
            path_str: path_str.clone(),
            options,
            config: config.clone(),
            head: RwLock::new(head),
            now_floor: AtomicI64::new(i64::MIN),
        });
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let w = Writer::new(conn, shared.clone(), rx)?;
        let thread = std::thread::Builder::new()
            .name("kube-insight-sqlite-writer".into())
            .spawn(move || w.run())
            .map_err(|e| Error::Unavailable(format!("starting the sqlite writer: {e}")))?;
        tracing::info!(path = %path_str, series = replay.series, head_samples = replay.samples, "sqlite store open");
        Ok(SqliteStore {
            logs: subs.logs,
            events: subs.events,
            topology: subs.topology,
            shared,
            tx: Some(tx),
            thread: Some(thread),
            replay,
        })
    }

    /// What the start-up replay of `head_wal` did.
    pub fn replay_stats(&self) -> &ReplayStats {
        &self.replay
    }

    /// Approximate heap bytes held by the in-memory head (series, open
    /// windows, index, interned labels), for `/metrics` and the bench.
    pub fn head_heap_bytes(&self) -> usize {
        lock_read(&self.shared.head).heap_bytes()
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    async fn send(&self, msg: Msg, wait: Option<Duration>) -> Result<()> {
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| Error::Unavailable("the sqlite store is closed".into()))?;
        let stopped = || Error::Unavailable("the sqlite writer thread has stopped".into());
        match tx.try_send(msg) {
            Ok(()) => Ok(()),
            Err(TrySendError::Closed(_)) => Err(stopped()),
            Err(TrySendError::Full(msg)) => match wait {
                None => tx.send(msg).await.map_err(|_| stopped()),
                Some(wait) => match tx.send_timeout(msg, wait).await {
                    Ok(()) => Ok(()),
                    Err(SendTimeoutError::Closed(_)) => Err(stopped()),
                    Err(SendTimeoutError::Timeout(_)) => Err(Error::Overloaded(format!(
                        "the metrics write queue is full ({} batches waiting)",
                        self.shared.config.queue_capacity
                    ))),
                },
            },
        }
    }

    /// Fingerprints and resolves the batch's series on the caller's task
    /// (in parallel with other writers), sorting and de-duplicating each
    /// series' samples.
    fn prepare(&self, batch: MetricBatch) -> PreparedBatch {
        let mut outcome = WriteOutcome::default();
        let mut series = Vec::with_capacity(batch.series.len());
        let mut all: Vec<kube_insight_core::Sample> =
            Vec::with_capacity(batch.series.iter().map(|s| s.samples.len()).sum());
        for ts in batch.series {
            if ts.samples.is_empty() {
                continue;
            }
            let start = all.len();
            all.extend_from_slice(&ts.samples);
            let mine = &mut all[start..];
            if !mine
                .windows(2)
                .all(|w| w[0].timestamp_ms < w[1].timestamp_ms)
            {
                mine.sort_by_key(|s| s.timestamp_ms);
                let mut kept = start;
                for i in start..all.len() {
                    if i == start || all[i].timestamp_ms != all[kept - 1].timestamp_ms {
                        all[kept] = all[i];
                        kept += 1;
                    }
                }
                outcome.samples_duplicate += (all.len() - kept) as u64;
                all.truncate(kept);
            }
            series.push(PreparedSeries {
                id: None,
                key: head::series_key(&ts.labels),
                labels: Some(ts.labels),
                samples: start..all.len(),
            });
        }
        {
            let head = lock_read(&self.shared.head);
            for s in &mut series {
                s.id = head.lookup(s.key);
            }
        }
        // Free the labels of known series here, on the caller's thread: the
        // single writer thread should not spend its time in free().
        for s in &mut series {
            if s.id.is_some() {
                s.labels = None;
            }
        }
        PreparedBatch {
            cluster: batch.cluster,
            series,
            samples: all,
            outcome,
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Shared) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || f(&shared))
            .await
            .map_err(|e| Error::Unavailable(format!("sqlite read task failed: {e}")))?
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the queue ends the writer once it has finished the queued
        // work; joining makes a re-open of the same file see all of it.
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!(path = %self.shared.path_str, "sqlite writer thread panicked");
            }
        }
    }
}

#[async_trait]
impl MetricStore for SqliteStore {
    async fn write_samples(&self, batch: MetricBatch) -> Result<WriteOutcome> {
        if batch.series.iter().all(|s| s.samples.is_empty()) {
            return Ok(WriteOutcome::default());
        }
        let prepared = self.prepare(batch);
        let (reply, rx) = oneshot::channel();
        self.send(
            Msg::Write {
                batch: prepared,
                reply,
            },
            Some(self.shared.config.enqueue_timeout),
        )
        .await?;
        match tokio::time::timeout(self.shared.config.write_timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(Error::Unavailable(
                "the sqlite writer stopped before answering".into(),
            )),
            Err(_) => Err(Error::Unavailable(format!(
                "the write was not committed within {:?}; it may still be stored, and a retry is deduplicated",
                self.shared.config.write_timeout
            ))),
        }
    }

    async fn select(&self, query: &SelectQuery) -> Result<Vec<TimeSeries>> {
        let q = query.clone();
        self.blocking(move |s| query::select(s, &q)).await
    }

    async fn series(&self, query: &SeriesQuery) -> Result<Vec<Labels>> {
        let q = query.clone();
        self.blocking(move |s| query::series(s, &q)).await
    }

    async fn label_names(&self, query: &SeriesQuery) -> Result<Vec<String>> {
        let q = query.clone();
        self.blocking(move |s| query::label_names(s, &q)).await
    }

    async fn label_values(&self, name: &str, query: &SeriesQuery) -> Result<Vec<String>> {
        let q = query.clone();
        let name = name.to_string();
        self.blocking(move |s| query::label_values(s, &name, &q))
            .await
    }

    async fn entities(&self, query: &EntityQuery) -> Result<Vec<Entity>> {
        let q = query.clone();
        self.blocking(move |s| query::entities(s, &q)).await
    }

    async fn clusters(
        &self,
        range: kube_insight_core::TimeRange,
        limit: usize,
    ) -> Result<Vec<kube_insight_store::metrics::ClusterSeen>> {
        self.blocking(move |s| query::clusters(s, range, limit))
            .await
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<()> {
        if self.tx.as_ref().is_none_or(|t| t.is_closed()) {
            return Err(Error::Unavailable(
                "the sqlite writer thread has stopped".into(),
            ));
        }
        self.blocking(|s| {
            let c = s.pool.get().map_err(|e| s.sql_err(e))?;
            c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .map_err(|e| s.sql_err(e))?;
            Ok(())
        })
        .await
    }

    async fn apply_schema(&self) -> Result<u32> {
        self.blocking(|s| {
            let mut c = Connection::open(&s.path).map_err(|e| s.sql_err(e))?;
            c.busy_timeout(s.config.busy_timeout)
                .map_err(|e| s.sql_err(e))?;
            let v = schema::apply(&mut c).map_err(|e| s.sql_err(e))?;
            if v != SCHEMA_VERSION {
                return Err(Error::SchemaMismatch {
                    found: v,
                    wanted: SCHEMA_VERSION,
                });
            }
            Ok(v)
        })
        .await
    }

    async fn check_schema(&self) -> Result<u32> {
        self.blocking(|s| {
            let c = s.pool.get().map_err(|e| s.sql_err(e))?;
            let v = schema::current_version(&c).map_err(|e| s.sql_err(e))?;
            if v != SCHEMA_VERSION {
                return Err(Error::SchemaMismatch {
                    found: v,
                    wanted: SCHEMA_VERSION,
                });
            }
            Ok(v)
        })
        .await
    }

    async fn maintain(&self, now_ms: i64) -> Result<MaintenanceReport> {
        let (reply, rx) = oneshot::channel();
        self.send(Msg::Maintain { now_ms, reply }, None).await?;
        let mut report = rx.await.map_err(|_| {
            Error::Unavailable("the sqlite writer stopped during maintenance".into())
        })??;
        let logs = kube_insight_store::LogStore::maintain_logs(self.logs.as_ref(), now_ms).await?;
        report.rows_expired += logs.rows_expired;
        report.rows_expired +=
            kube_insight_store::EventStore::maintain_events(self.events.as_ref(), now_ms).await?;
        let topo =
            kube_insight_store::TopologyStore::maintain_topology(self.topology.as_ref(), now_ms)
                .await?;
        report.rows_expired += topo.rows_expired;
        Ok(report)
    }

    fn logs(&self) -> Arc<dyn kube_insight_store::LogStore> {
        self.logs.clone()
    }

    fn events(&self) -> Arc<dyn kube_insight_store::EventStore> {
        self.events.clone()
    }

    fn topology(&self) -> Arc<dyn kube_insight_store::TopologyStore> {
        self.topology.clone()
    }

    async fn flush(&self) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.send(Msg::Flush { reply }, None).await?;
        rx.await
            .map_err(|_| Error::Unavailable("the sqlite writer stopped during flush".into()))?
    }

    fn stats(&self) -> StoreStats {
        let grace = self.shared.options.head_grace.as_millis() as i64;
        let now = kube_insight_core::time::now_ms().max(
            self.shared
                .now_floor
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        let (mut active_series, head_samples, live_series) = {
            let head = lock_read(&self.shared.head);
            let live = head.live_by_cluster(now.saturating_sub(grace));
            let a: Vec<(String, u64)> = head
                .active
                .iter()
                .filter_map(|(&c, &n)| {
                    let name = head.syms.resolve(c);
                    (!name.is_empty() || n > 0).then(|| (name.to_string(), n))
                })
                .collect();
            (a, head.head_samples, live)
        };
        active_series.sort();
        let mut disk = 0u64;
        let mut known = false;
        for suffix in ["", "-wal"] {
            let mut p = self.shared.path.as_os_str().to_owned();
            p.push(suffix);
            if let Ok(m) = std::fs::metadata(&p) {
                disk += m.len();
                known = true;
            }
        }
        StoreStats {
            active_series,
            live_series,
            series_cap: self.shared.options.max_series_per_cluster as u64,
            head_samples,
            disk_bytes: known.then_some(disk),
        }
    }
}
