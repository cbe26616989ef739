//! Topology in the embedded SQLite store ([`SqliteTopologyStore`]).
//!
//! # Layout (tables prefixed `topo_`, in the same file as the other signals)
//! ```sql
//! topo_clusters(cluster PRIMARY KEY, first_ms, last_ms)       -- coverage
//! topo_keyframes(cluster, t_ms, data)  PK (cluster, t_ms)      -- whole graphs
//! topo_deltas(cluster, t_ms, data)     PK (cluster, t_ms)      -- changes, only when the graph changed
//! topo_stats(cluster, minute_ms, keyframe, data) PK (cluster, minute_ms)
//! topo_dependency_changes(cluster, t_ms, change, source, target, directed)  -- edge id derived
//! ```
//! Blobs use the shared codecs of [`kube_insight_store::topology`].
//!
//! # Writes
//! Saves come from one target loop per cluster, every interval: one
//! connection owned by the store, one `IMMEDIATE` transaction per save,
//! committed (`synchronous = FULL`) before `Ok`. The writer keeps the last
//! graph and stats chain of each cluster in memory to compute deltas; after
//! a restart it rebuilds the graph from the store and starts a new stats
//! chain.
//!
//! # Reads
//! The graph at T is the newest keyframe ≤ T plus the deltas after it up to
//! T; the keyframe policy ([`SqliteTopologyConfig`]) bounds that work. Reads
//! keep, per kind, a few recent results in memory and start from the
//! nearest one instead of from scratch:
//! - decoded keyframes, and rebuilt graphs by version: the graph at T starts
//!   from the latest cached graph between T's keyframe and T, and applies
//!   only the deltas after it (graphs share their strings, so the copy
//!   that receives the deltas costs reference counts, not allocations);
//! - decoded stats chains by minute: stats at T continue the latest cached
//!   state of T's chain instead of decoding from the chain's keyframe;
//! - stats by minute.
//!
//! Rows are located by their key columns only; a blob (keyframes are
//! hundreds of KB) is read only when it is to be decoded.

use async_trait::async_trait;
use kube_insight_core::topology::{Graph, Interner, Snapshot, Stats};
use kube_insight_store::error::{Error, Result};
use kube_insight_store::topology::{
    chain_stats, check_save_order, decode_delta_with, decode_graph, decode_stats_into,
    dependency_changes_of, encode_delta, encode_graph, encode_stats, needs_keyframe, stats_row_due,
    DependencyChange, DependencyChangeKind, DependencyQuery, GraphAt, SaveOutcome, StatsAt,
    StatsChain, TopologyCluster, TopologyMaintenance, TopologyStore, MINUTE_MS,
    STATS_CHAIN_MINUTES, STATS_MAX_AGE_MS,
};
use kube_insight_store::StoreOptions;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::Duration;

const DDL: &str = "
CREATE TABLE IF NOT EXISTS topo_clusters (
    cluster  TEXT PRIMARY KEY,
    first_ms INTEGER NOT NULL,
    last_ms  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS topo_keyframes (
    cluster TEXT NOT NULL,
    t_ms    INTEGER NOT NULL,
    data    BLOB NOT NULL,
    PRIMARY KEY (cluster, t_ms)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS topo_deltas (
    cluster TEXT NOT NULL,
    t_ms    INTEGER NOT NULL,
    data    BLOB NOT NULL,
    PRIMARY KEY (cluster, t_ms)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS topo_stats (
    cluster   TEXT NOT NULL,
    minute_ms INTEGER NOT NULL,
    keyframe  INTEGER NOT NULL,
    data      BLOB NOT NULL,
    PRIMARY KEY (cluster, minute_ms)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS topo_dependency_changes (
    cluster  TEXT NOT NULL,
    t_ms     INTEGER NOT NULL,
    change   INTEGER NOT NULL,
    source   TEXT NOT NULL,
    target   TEXT NOT NULL,
    directed INTEGER NOT NULL,
    PRIMARY KEY (cluster, t_ms, source, target, directed, change)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS topo_dependency_changes_t ON topo_dependency_changes(t_ms);
";

/// Creates the `topo_*` tables if they are missing. Idempotent; the main
/// schema's `apply` may call it inside its migration transaction.
pub fn create_schema(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(DDL)
}

/// Tuning of the topology backend (the defaults suit production).
#[derive(Debug, Clone)]
pub struct SqliteTopologyConfig {
    pub busy_timeout: Duration,
    pub read_connections: usize,
    /// A new keyframe after this many deltas…
    pub max_deltas_per_keyframe: usize,
    /// …or when the deltas since the last keyframe weigh more than it
    /// (always), or after this long.
    pub max_keyframe_age: Duration,
    /// Stats rows per chain (a stats keyframe at least this often, minutes).
    pub stats_chain_minutes: usize,
    /// Decoded keyframes kept in memory (the costly part of reading an
    /// older moment: a whole graph to decode; 8 cover a day or more of
    /// history), as many rebuilt graphs (where later reads start), and half
    /// as many stats minutes and decoded stats chains. For a cluster of
    /// 12,000 nodes and 20,000 edges a keyframe is about 5 MB in memory, a
    /// rebuilt graph (its strings shared) about 3 MB, the others about 2 MB.
    pub cache_entries: usize,
}

impl Default for SqliteTopologyConfig {
    fn default() -> Self {
        SqliteTopologyConfig {
            busy_timeout: Duration::from_secs(5),
            read_connections: 4,
            max_deltas_per_keyframe: 1024,
            max_keyframe_age: Duration::from_secs(6 * 3600),
            stats_chain_minutes: STATS_CHAIN_MINUTES,
            cache_entries: 8,
        }
    }
}

/// Hard bound on rows one reconstruction reads (a guard, far above the policy).
const MAX_RECONSTRUCT_ROWS: i64 = 200_000;

/// The writer's view of one cluster.
struct ClusterState {
    graph: Arc<Graph>,
    first_ms: i64,
    last_save_ms: i64,
    /// The save that produced `graph`.
    version_ms: i64,
    keyframe_ms: i64,
    keyframe_bytes: u64,
    deltas_since_keyframe: usize,
    delta_bytes_since_keyframe: u64,
    /// Minute of the last stats row and the chain after it.
    stats: Option<(i64, StatsChain)>,
}

/// A small most-recently-used cache keyed by (cluster, time).
type Lru<T> = Mutex<VecDeque<((String, i64), T)>>;

struct Inner {
    path: PathBuf,
    path_str: String,
    retention_ms: i64,
    config: SqliteTopologyConfig,
    write: Mutex<Connection>,
    pool: Mutex<Vec<Connection>>,
    states: Mutex<HashMap<String, ClusterState>>,
    /// Decoded keyframes by their time.
    keyframes: Lru<Arc<Graph>>,
    /// Rebuilt graphs by version (the time of the save that made them).
    graphs: Lru<Arc<Graph>>,
    /// Stats by minute.
    stats: Lru<Arc<Stats>>,
    /// Decoded stats chains by minute: (the chain's keyframe minute, the
    /// chain after that minute's row).
    chains: Lru<(i64, Arc<StatsChain>)>,
    reclaimer: Reclaimer,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

use super::schema::sql_error;

fn cache_get<T: Clone>(
    c: &Mutex<VecDeque<((String, i64), T)>>,
    cluster: &str,
    t: i64,
) -> Option<T> {
    let mut c = lock(c);
    let i = c.iter().position(|((k, kt), _)| k == cluster && *kt == t)?;
    let e = c.remove(i)?;
    let v = e.1.clone();
    c.push_front(e);
    Some(v)
}

/// The entry of `cluster` with the greatest time in `lo..=hi`.
fn cache_latest<T: Clone>(c: &Lru<T>, cluster: &str, lo: i64, hi: i64) -> Option<(i64, T)> {
    let mut c = lock(c);
    let i = c
        .iter()
        .enumerate()
        .filter(|(_, ((k, t), _))| k == cluster && (lo..=hi).contains(t))
        .max_by_key(|(_, ((_, t), _))| *t)
        .map(|(i, _)| i)?;
    let e = c.remove(i)?;
    let out = (e.0 .1, e.1.clone());
    c.push_front(e);
    Some(out)
}

/// Removes the entry of `cluster` at `t`.
fn cache_take<T>(c: &Lru<T>, cluster: &str, t: i64) -> Option<T> {
    let mut c = lock(c);
    let i = c.iter().position(|((k, kt), _)| k == cluster && *kt == t)?;
    c.remove(i).map(|e| e.1)
}

/// Adds (or replaces) an entry; returns what fell out, for the caller to
/// hand to [`Reclaimer`].
#[must_use]
fn cache_put<T>(
    c: &Mutex<VecDeque<((String, i64), T)>>,
    cluster: &str,
    t: i64,
    v: T,
    cap: usize,
) -> Vec<T> {
    let mut c = lock(c);
    let mut out = Vec::new();
    if let Some(i) = c.iter().position(|((k, kt), _)| k == cluster && *kt == t) {
        out.extend(c.remove(i).map(|e| e.1));
    }
    c.push_front(((cluster.to_string(), t), v));
    while c.len() > cap.max(1) {
        out.extend(c.pop_back().map(|e| e.1));
    }
    out
}

/// Frees what the caches evict on a thread of its own: a rebuilt graph or a
/// decoded stats minute is tens of thousands of allocations, and freeing
/// them is no part of answering the read that evicted them. Without the
/// thread (it could not be started) values are dropped in place.
struct Reclaimer {
    tx: Option<mpsc::Sender<Box<dyn Send>>>,
}

impl Reclaimer {
    fn start() -> Reclaimer {
        let (tx, rx) = mpsc::channel::<Box<dyn Send>>();
        let spawned = std::thread::Builder::new()
            .name("topology-reclaim".into())
            .spawn(move || {
                // Ends when the store (the sender) is dropped.
                for garbage in rx {
                    drop(garbage);
                }
            });
        if let Err(e) = &spawned {
            tracing::warn!(error = %e, "topology: no reclaim thread; evicted cache entries are freed inline");
        }
        Reclaimer {
            tx: spawned.ok().map(|_| tx),
        }
    }

    fn reclaim<T: Send + 'static>(&self, garbage: Vec<T>) {
        if garbage.is_empty() {
            return;
        }
        match &self.tx {
            Some(tx) => {
                // A closed channel hands the value back: drop it here.
                let _ = tx.send(Box::new(garbage));
            }
            None => drop(garbage),
        }
    }
}

/// Topology in SQLite, on its own connection to the store's file.
#[derive(Clone)]
pub struct SqliteTopologyStore {
    inner: Arc<Inner>,
}

impl SqliteTopologyStore {
    pub async fn open(path: &Path, options: StoreOptions) -> Result<Self> {
        Self::open_with(path, options, SqliteTopologyConfig::default()).await
    }

    pub async fn open_with(
        path: &Path,
        options: StoreOptions,
        config: SqliteTopologyConfig,
    ) -> Result<Self> {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || Self::open_blocking(path, options, config))
            .await
            .map_err(|e| Error::Unavailable(format!("opening the topology store: {e}")))?
    }

    fn open_blocking(
        path: PathBuf,
        options: StoreOptions,
        config: SqliteTopologyConfig,
    ) -> Result<Self> {
        let path_str = path.display().to_string();
        let sq = |e| sql_error(&path_str, e);
        let conn = super::schema::open_connection(&path, config.busy_timeout)?;
        create_schema(&conn).map_err(sq)?;
        Ok(SqliteTopologyStore {
            inner: Arc::new(Inner {
                path,
                path_str: path_str.clone(),
                retention_ms: i64::try_from(options.retention.topology.as_millis())
                    .unwrap_or(i64::MAX),
                config,
                write: Mutex::new(conn),
                pool: Mutex::new(Vec::new()),
                states: Mutex::new(HashMap::new()),
                keyframes: Mutex::new(VecDeque::new()),
                graphs: Mutex::new(VecDeque::new()),
                stats: Mutex::new(VecDeque::new()),
                chains: Mutex::new(VecDeque::new()),
                reclaimer: Reclaimer::start(),
            }),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| Error::Unavailable(format!("topology store task failed: {e}")))?
    }

    /// Payload bytes stored per table (`topo_keyframes`, `topo_deltas`,
    /// `topo_stats`, `topo_dependency_changes`), for benchmarks and `/metrics`.
    pub async fn table_bytes(&self) -> Result<Vec<(&'static str, u64, u64)>> {
        self.blocking(|inner| {
            let conn = inner.read_conn()?;
            let mut out = Vec::new();
            for (table, expr) in [
                ("topo_keyframes", "length(data) + length(cluster) + 8"),
                ("topo_deltas", "length(data) + length(cluster) + 8"),
                ("topo_stats", "length(data) + length(cluster) + 9"),
                (
                    "topo_dependency_changes",
                    "length(source) + length(target) + length(cluster) + 10",
                ),
            ] {
                let (rows, bytes): (i64, Option<i64>) = conn
                    .query_row(
                        &format!("SELECT count(*), sum({expr}) FROM {table}"),
                        [],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .map_err(|e| inner.sql(e))?;
                out.push((table, rows as u64, bytes.unwrap_or(0) as u64));
            }
            inner.give_back(conn);
            Ok(out)
        })
        .await
    }
}

impl Inner {
    /// Capacity of the caches of stats minutes and decoded chains.
    fn small_cache(&self) -> usize {
        (self.config.cache_entries / 2).max(1)
    }

    fn sql(&self, e: rusqlite::Error) -> Error {
        sql_error(&self.path_str, e)
    }

    fn read_conn(&self) -> Result<Connection> {
        if let Some(c) = lock(&self.pool).pop() {
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
        let mut idle = lock(&self.pool);
        if idle.len() < self.config.read_connections.max(1) && c.is_autocommit() {
            idle.push(c);
        }
    }

    /// The decoded keyframe of `cluster` saved at `t_ms` (cached).
    fn keyframe(&self, conn: &Connection, cluster: &str, t_ms: i64) -> Result<Arc<Graph>> {
        if let Some(g) = cache_get(&self.keyframes, cluster, t_ms) {
            return Ok(g);
        }
        let data: Vec<u8> = conn
            .prepare_cached("SELECT data FROM topo_keyframes WHERE cluster = ?1 AND t_ms = ?2")
            .and_then(|mut st| st.query_row(params![cluster, t_ms], |r| r.get(0)))
            .map_err(|e| self.sql(e))?;
        let g = Arc::new(decode_graph(&data)?);
        let evicted = cache_put(
            &self.keyframes,
            cluster,
            t_ms,
            g.clone(),
            self.config.cache_entries,
        );
        self.reclaimer.reclaim(evicted);
        Ok(g)
    }

    /// The graph `start` (cached at `version`) to apply deltas to: taken out
    /// of the cache and moved forward in place when nothing else holds it
    /// (no copy), else a copy (a keyframe stays cached as it is).
    fn take_graph(&self, cluster: &str, version: i64, start: Arc<Graph>) -> Graph {
        // The cache's reference goes first, so `start` may be the only one.
        let was_cached = cache_take(&self.graphs, cluster, version).is_some();
        match Arc::try_unwrap(start) {
            Ok(g) => g,
            Err(shared) => {
                // Still shared (a keyframe, or a reader holds it): keep it
                // cached as it is and copy it.
                if was_cached {
                    let evicted = cache_put(
                        &self.graphs,
                        cluster,
                        version,
                        shared.clone(),
                        self.config.cache_entries,
                    );
                    self.reclaimer.reclaim(evicted);
                }
                (*shared).clone()
            }
        }
    }

    /// The graph at `at_ms` from the tables: (graph, version). Starts from
    /// the latest cached graph between the keyframe and `at_ms`.
    fn reconstruct(
        &self,
        conn: &Connection,
        cluster: &str,
        at_ms: i64,
    ) -> Result<Option<(Arc<Graph>, i64)>> {
        let kf_ms: Option<i64> = conn
            .prepare_cached(
                "SELECT t_ms FROM topo_keyframes WHERE cluster = ?1 AND t_ms <= ?2 ORDER BY t_ms DESC LIMIT 1",
            )
            .and_then(|mut st| st.query_row(params![cluster, at_ms], |r| r.get(0)).optional())
            .map_err(|e| self.sql(e))?;
        let Some(kf_ms) = kf_ms else {
            return Ok(None);
        };
        let (from, base) = match cache_latest(&self.graphs, cluster, kf_ms, at_ms) {
            Some(hit) => hit,
            None => (kf_ms, self.keyframe(conn, cluster, kf_ms)?),
        };
        let mut stmt = conn
            .prepare_cached("SELECT t_ms, data FROM topo_deltas WHERE cluster = ?1 AND t_ms > ?2 AND t_ms <= ?3 ORDER BY t_ms LIMIT ?4")
            .map_err(|e| self.sql(e))?;
        let mut rows = stmt
            .query(params![cluster, from, at_ms, MAX_RECONSTRUCT_ROWS + 1])
            .map_err(|e| self.sql(e))?;
        let mut names = Interner::new();
        let mut base = Some(base);
        let mut graph: Option<Graph> = None;
        let (mut version, mut n) = (from, 0usize);
        while let Some(row) = rows.next().map_err(|e| self.sql(e))? {
            n += 1;
            if n as i64 > MAX_RECONSTRUCT_ROWS {
                return Err(Error::LimitExceeded {
                    what: "topology deltas after one keyframe",
                    limit: MAX_RECONSTRUCT_ROWS as usize,
                });
            }
            let t: i64 = row.get(0).map_err(|e| self.sql(e))?;
            let data = row.get_ref(1).map_err(|e| self.sql(e))?;
            let data = data
                .as_blob()
                .map_err(|e| self.sql(rusqlite::Error::from(e)))?;
            let d = decode_delta_with(data, &mut names)?;
            let g = match (&mut graph, base.take()) {
                (Some(g), _) => g,
                (None, Some(b)) => graph.insert(self.take_graph(cluster, from, b)),
                (None, None) => graph.insert(Graph::default()),
            };
            g.apply_owned(d);
            version = t;
        }
        let g = match (graph, base) {
            (Some(g), _) => Arc::new(g),
            (None, Some(b)) => b,
            (None, None) => Arc::new(Graph::default()),
        };
        let evicted = cache_put(
            &self.graphs,
            cluster,
            version,
            g.clone(),
            self.config.cache_entries,
        );
        self.reclaimer.reclaim(evicted);
        Ok(Some((g, version)))
    }

    fn coverage(&self, conn: &Connection, cluster: &str) -> Result<Option<(i64, i64)>> {
        conn.query_row(
            "SELECT first_ms, last_ms FROM topo_clusters WHERE cluster = ?1",
            params![cluster],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(|e| self.sql(e))
    }

    fn load_state(&self, conn: &Connection, cluster: &str) -> Result<Option<ClusterState>> {
        let Some((first_ms, last_ms)) = self.coverage(conn, cluster)? else {
            return Ok(None);
        };
        let Some((graph, version_ms)) = self.reconstruct(conn, cluster, i64::MAX)? else {
            return Ok(None);
        };
        let (keyframe_ms, keyframe_bytes): (i64, i64) = conn
            .query_row(
                "SELECT t_ms, length(data) FROM topo_keyframes WHERE cluster = ?1 ORDER BY t_ms DESC LIMIT 1",
                params![cluster],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| self.sql(e))?;
        let (deltas, delta_bytes): (i64, Option<i64>) = conn
            .query_row(
                "SELECT count(*), sum(length(data)) FROM topo_deltas WHERE cluster = ?1 AND t_ms > ?2",
                params![cluster, keyframe_ms],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| self.sql(e))?;
        tracing::info!(
            cluster,
            nodes = graph.nodes.len(),
            edges = graph.edges.len(),
            deltas,
            "topology: resumed the cluster's graph from the store"
        );
        Ok(Some(ClusterState {
            graph,
            first_ms,
            last_save_ms: last_ms,
            version_ms,
            keyframe_ms,
            keyframe_bytes: keyframe_bytes.max(0) as u64,
            deltas_since_keyframe: deltas.max(0) as usize,
            delta_bytes_since_keyframe: delta_bytes.unwrap_or(0).max(0) as u64,
            stats: None,
        }))
    }

    fn save(&self, cluster: &str, at_ms: i64, snap: Snapshot) -> Result<SaveOutcome> {
        let mut conn = lock(&self.write);
        let mut states = lock(&self.states);
        if !states.contains_key(cluster) {
            if let Some(st) = self.load_state(&conn, cluster)? {
                states.insert(cluster.to_string(), st);
            }
        }
        // The stats chain is taken out and encoded in place: if anything
        // below fails, the next stats row starts a new chain.
        let taken_stats = states.get_mut(cluster).and_then(|s| s.stats.take());
        let state = states.get(cluster);
        if check_save_order(cluster, state.map(|s| s.last_save_ms), at_ms)? {
            return Ok(SaveOutcome::default());
        }
        let mut out = SaveOutcome::default();
        let empty = Graph::default();
        let before = state.map_or(&empty, |s| &s.graph);
        let delta = before.delta_to(&snap.graph);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.sql(e))?;
        let mut next_kf = state.map(|s| {
            (
                s.keyframe_ms,
                s.keyframe_bytes,
                s.deltas_since_keyframe,
                s.delta_bytes_since_keyframe,
            )
        });
        if state.is_none() || !delta.is_empty() {
            out.structure_changed = !delta.is_empty();
            let mut delta_len = 0u64;
            if let Some(st) = state {
                let data = encode_delta(&delta);
                delta_len = data.len() as u64;
                tx.execute(
                    "INSERT OR REPLACE INTO topo_deltas (cluster, t_ms, data) VALUES (?1, ?2, ?3)",
                    params![cluster, at_ms, data],
                )
                .map_err(|e| self.sql(e))?;
                out.bytes_written += delta_len;
                let changes = dependency_changes_of(cluster, at_ms, &st.graph, &delta);
                let mut ins = tx
                    .prepare_cached("INSERT OR IGNORE INTO topo_dependency_changes (cluster, t_ms, change, source, target, directed) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
                    .map_err(|e| self.sql(e))?;
                for c in &changes {
                    let kind = match c.kind {
                        DependencyChangeKind::Appeared => 1,
                        DependencyChangeKind::Lost => 0,
                    };
                    ins.execute(params![
                        cluster, at_ms, kind, c.source, c.target, c.directed
                    ])
                    .map_err(|e| self.sql(e))?;
                    out.bytes_written += (c.source.len() + c.target.len() + 10) as u64;
                }
                out.dependency_changes = changes.len() as u64;
            }
            let need_kf = needs_keyframe(
                next_kf,
                delta_len,
                at_ms,
                self.config.max_deltas_per_keyframe,
                i64::try_from(self.config.max_keyframe_age.as_millis()).unwrap_or(i64::MAX),
            );
            if need_kf {
                let data = encode_graph(&snap.graph);
                tx.execute("INSERT OR REPLACE INTO topo_keyframes (cluster, t_ms, data) VALUES (?1, ?2, ?3)", params![cluster, at_ms, data])
                    .map_err(|e| self.sql(e))?;
                out.keyframe = true;
                out.bytes_written += data.len() as u64;
                next_kf = Some((at_ms, data.len() as u64, 0, 0));
            } else if let Some(k) = next_kf.as_mut() {
                k.2 += 1;
                k.3 += delta_len;
            }
        }
        // Stats: the first save of each minute.
        let minute = at_ms - at_ms.rem_euclid(MINUTE_MS);
        let prev_stats = taken_stats;
        let new_chain;
        if let Some(keyframe) =
            stats_row_due(prev_stats.as_ref(), minute, self.config.stats_chain_minutes)
        {
            let mut chain = prev_stats.map(|(_, c)| c).unwrap_or_default();
            let data = encode_stats(&mut chain, &snap.stats, keyframe);
            tx.execute(
                "INSERT OR REPLACE INTO topo_stats (cluster, minute_ms, keyframe, data) VALUES (?1, ?2, ?3, ?4)",
                params![cluster, minute, keyframe, data],
            )
            .map_err(|e| self.sql(e))?;
            out.stats_written = true;
            out.bytes_written += data.len() as u64;
            new_chain = Some((minute, chain));
        } else {
            new_chain = prev_stats;
        }
        let first_ms = state.map_or(at_ms, |s| s.first_ms);
        tx.execute(
            "INSERT INTO topo_clusters (cluster, first_ms, last_ms) VALUES (?1, ?2, ?3) ON CONFLICT(cluster) DO UPDATE SET last_ms = excluded.last_ms",
            params![cluster, first_ms, at_ms],
        )
        .map_err(|e| self.sql(e))?;
        tx.commit().map_err(|e| self.sql(e))?;

        // Committed: now the memory follows.
        let (kf_ms, kf_bytes, n, bytes) = next_kf.unwrap_or((at_ms, 0, 0, 0));
        let prev = states.remove(cluster);
        let (graph, version_ms, stats) = match prev {
            Some(p) if delta.is_empty() => (p.graph, p.version_ms, new_chain),
            _ => (Arc::new(snap.graph), at_ms, new_chain),
        };
        states.insert(
            cluster.to_string(),
            ClusterState {
                graph,
                first_ms,
                last_save_ms: at_ms,
                version_ms,
                keyframe_ms: kf_ms,
                keyframe_bytes: kf_bytes,
                deltas_since_keyframe: n,
                delta_bytes_since_keyframe: bytes,
                stats,
            },
        );
        if out.structure_changed || out.keyframe {
            tracing::debug!(
                cluster,
                at_ms,
                added_edges = delta.added_edges.len(),
                removed_edges = delta.removed_edges.len(),
                keyframe = out.keyframe,
                "topology: structure saved"
            );
        }
        Ok(out)
    }

    fn graph_at(&self, cluster: &str, at_ms: i64) -> Result<Option<GraphAt>> {
        if let Some(st) = lock(&self.states).get(cluster) {
            if at_ms >= st.version_ms && at_ms >= st.first_ms {
                return Ok(Some(GraphAt {
                    graph: st.graph.clone(),
                    version_ms: st.version_ms,
                    first_ms: st.first_ms,
                    last_ms: st.last_save_ms,
                }));
            }
        }
        let conn = self.read_conn()?;
        let res = (|| {
            let Some((first_ms, last_ms)) = self.coverage(&conn, cluster)? else {
                return Ok(None);
            };
            if at_ms < first_ms {
                return Ok(None);
            }
            Ok(self
                .reconstruct(&conn, cluster, at_ms)?
                .map(|(graph, version_ms)| GraphAt {
                    graph,
                    version_ms,
                    first_ms,
                    last_ms,
                }))
        })();
        self.give_back(conn);
        res
    }

    fn stats_at(&self, cluster: &str, at_ms: i64) -> Result<Option<StatsAt>> {
        if let Some(st) = lock(&self.states).get(cluster) {
            if let Some((m, chain)) = &st.stats {
                if *m <= at_ms && at_ms - *m < MINUTE_MS {
                    let stats = match cache_get(&self.stats, cluster, *m) {
                        Some(s) => s,
                        None => {
                            let s = Arc::new(chain_stats(chain));
                            let evicted =
                                cache_put(&self.stats, cluster, *m, s.clone(), self.small_cache());
                            self.reclaimer.reclaim(evicted);
                            s
                        }
                    };
                    return Ok(Some(StatsAt {
                        stats,
                        minute_ms: *m,
                    }));
                }
            }
        }
        let conn = self.read_conn()?;
        let res = self.stats_from_tables(&conn, cluster, at_ms);
        self.give_back(conn);
        res
    }

    /// Stats at `at_ms` from the tables: the chain's rows from its keyframe
    /// (or from the latest cached state of the chain) to the minute.
    fn stats_from_tables(
        &self,
        conn: &Connection,
        cluster: &str,
        at_ms: i64,
    ) -> Result<Option<StatsAt>> {
        // The minute, and its chain's keyframe: keys only, newest first.
        let (mut minute, mut key) = (None, None);
        {
            let mut stmt = conn
                .prepare_cached("SELECT minute_ms, keyframe FROM topo_stats WHERE cluster = ?1 AND minute_ms <= ?2 ORDER BY minute_ms DESC LIMIT ?3")
                .map_err(|e| self.sql(e))?;
            let mut rows = stmt
                .query(params![cluster, at_ms, MAX_RECONSTRUCT_ROWS])
                .map_err(|e| self.sql(e))?;
            while let Some(row) = rows.next().map_err(|e| self.sql(e))? {
                let m: i64 = row.get(0).map_err(|e| self.sql(e))?;
                let k: bool = row.get(1).map_err(|e| self.sql(e))?;
                if minute.is_none() {
                    if at_ms - m > STATS_MAX_AGE_MS {
                        return Ok(None);
                    }
                    if let Some(stats) = cache_get(&self.stats, cluster, m) {
                        return Ok(Some(StatsAt {
                            stats,
                            minute_ms: m,
                        }));
                    }
                    minute = Some(m);
                }
                if k {
                    key = Some(m);
                    break;
                }
            }
        }
        let Some(minute) = minute else {
            return Ok(None);
        };
        let Some(key) = key else {
            return Ok(None); // retention removed the chain's start
        };
        // Continue the latest decoded state of this chain, if one is cached.
        let (lo, mut chain) = match cache_latest(&self.chains, cluster, key, minute) {
            Some((m, (k, c))) if k == key => (m + 1, (*c).clone()),
            _ => (key, StatsChain::default()),
        };
        let mut stmt = conn
            .prepare_cached("SELECT data FROM topo_stats WHERE cluster = ?1 AND minute_ms >= ?2 AND minute_ms <= ?3 ORDER BY minute_ms LIMIT ?4")
            .map_err(|e| self.sql(e))?;
        let mut rows = stmt
            .query(params![cluster, lo, minute, MAX_RECONSTRUCT_ROWS])
            .map_err(|e| self.sql(e))?;
        while let Some(row) = rows.next().map_err(|e| self.sql(e))? {
            let data = row.get_ref(0).map_err(|e| self.sql(e))?;
            let data = data
                .as_blob()
                .map_err(|e| self.sql(rusqlite::Error::from(e)))?;
            decode_stats_into(&mut chain, data)?;
        }
        let stats = Arc::new(chain_stats(&chain));
        let cap = self.small_cache();
        let evicted = cache_put(&self.chains, cluster, minute, (key, Arc::new(chain)), cap);
        self.reclaimer.reclaim(evicted);
        let evicted = cache_put(&self.stats, cluster, minute, stats.clone(), cap);
        self.reclaimer.reclaim(evicted);
        Ok(Some(StatsAt {
            stats,
            minute_ms: minute,
        }))
    }

    fn dependency_changes(&self, q: &DependencyQuery) -> Result<Vec<DependencyChange>> {
        let conn = self.read_conn()?;
        let res = (|| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT cluster, t_ms, change, source, target, directed FROM topo_dependency_changes
                     WHERE t_ms >= ?1 AND t_ms <= ?2 AND (?3 IS NULL OR cluster = ?3)
                     ORDER BY t_ms, source, target, change LIMIT ?4",
                )
                .map_err(|e| self.sql(e))?;
            let limit = q.limit.max(1);
            let rows = stmt
                .query_map(
                    params![
                        q.range.start_ms,
                        q.range.end_ms,
                        q.cluster,
                        (limit as i64).saturating_add(1)
                    ],
                    |r| {
                        Ok(DependencyChange {
                            cluster: r.get(0)?,
                            at_ms: r.get(1)?,
                            kind: if r.get::<_, i64>(2)? == 1 {
                                DependencyChangeKind::Appeared
                            } else {
                                DependencyChangeKind::Lost
                            },
                            source: r.get(3)?,
                            target: r.get(4)?,
                            directed: r.get(5)?,
                            edge_id: String::new(),
                        })
                    },
                )
                .map_err(|e| self.sql(e))?;
            let mut out = Vec::new();
            for r in rows {
                let mut c = r.map_err(|e| self.sql(e))?;
                c.edge_id = kube_insight_core::topology::edge_id(&c.source, &c.target, c.directed);
                out.push(c);
                if out.len() > limit {
                    return Err(Error::LimitExceeded {
                        what: "dependency changes",
                        limit,
                    });
                }
            }
            // Lost before appeared at the same time and edge.
            out.sort_by(|a, b| {
                a.at_ms
                    .cmp(&b.at_ms)
                    .then_with(|| a.edge_id.cmp(&b.edge_id))
                    .then(b.kind.cmp(&a.kind))
            });
            Ok(out)
        })();
        self.give_back(conn);
        res
    }

    fn clusters(&self) -> Result<Vec<TopologyCluster>> {
        let conn = self.read_conn()?;
        let res = (|| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT cluster, first_ms, last_ms FROM topo_clusters ORDER BY cluster",
                )
                .map_err(|e| self.sql(e))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(TopologyCluster {
                        cluster: r.get(0)?,
                        first_ms: r.get(1)?,
                        last_ms: r.get(2)?,
                    })
                })
                .map_err(|e| self.sql(e))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(|e| self.sql(e))
        })();
        self.give_back(conn);
        res
    }

    fn maintain(&self, now_ms: i64) -> Result<TopologyMaintenance> {
        let cutoff = now_ms.saturating_sub(self.retention_ms);
        let mut conn = lock(&self.write);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.sql(e))?;
        let clusters: Vec<String> = {
            let mut stmt = tx
                .prepare("SELECT cluster FROM topo_clusters")
                .map_err(|e| self.sql(e))?;
            let rows = stmt.query_map([], |r| r.get(0)).map_err(|e| self.sql(e))?;
            rows.collect::<rusqlite::Result<Vec<String>>>()
                .map_err(|e| self.sql(e))?
        };
        let mut expired = 0u64;
        let mut new_first: Vec<(String, i64)> = Vec::new();
        for c in &clusters {
            let kf: Option<i64> = tx
                .query_row(
                    "SELECT max(t_ms) FROM topo_keyframes WHERE cluster = ?1 AND t_ms <= ?2",
                    params![c, cutoff],
                    |r| r.get(0),
                )
                .map_err(|e| self.sql(e))?;
            if let Some(kf) = kf {
                expired += tx
                    .execute(
                        "DELETE FROM topo_keyframes WHERE cluster = ?1 AND t_ms < ?2",
                        params![c, kf],
                    )
                    .map_err(|e| self.sql(e))? as u64;
                expired += tx
                    .execute(
                        "DELETE FROM topo_deltas WHERE cluster = ?1 AND t_ms <= ?2",
                        params![c, kf],
                    )
                    .map_err(|e| self.sql(e))? as u64;
                tx.execute(
                    "UPDATE topo_clusters SET first_ms = max(first_ms, ?2) WHERE cluster = ?1",
                    params![c, kf],
                )
                .map_err(|e| self.sql(e))?;
                new_first.push((c.clone(), kf));
            }
            let sk: Option<i64> = tx
                .query_row("SELECT max(minute_ms) FROM topo_stats WHERE cluster = ?1 AND minute_ms <= ?2 AND keyframe = 1", params![c, cutoff], |r| r.get(0))
                .map_err(|e| self.sql(e))?;
            if let Some(sk) = sk {
                expired += tx
                    .execute(
                        "DELETE FROM topo_stats WHERE cluster = ?1 AND minute_ms < ?2",
                        params![c, sk],
                    )
                    .map_err(|e| self.sql(e))? as u64;
            }
        }
        expired += tx
            .execute(
                "DELETE FROM topo_dependency_changes WHERE t_ms < ?1",
                params![cutoff],
            )
            .map_err(|e| self.sql(e))? as u64;
        tx.commit().map_err(|e| self.sql(e))?;
        drop(conn);
        let mut states = lock(&self.states);
        for (c, kf) in new_first {
            if let Some(st) = states.get_mut(&c) {
                st.first_ms = st.first_ms.max(kf);
            }
        }
        drop(states);
        lock(&self.keyframes).clear();
        lock(&self.graphs).clear();
        lock(&self.stats).clear();
        lock(&self.chains).clear();
        if expired > 0 {
            tracing::info!(
                rows_expired = expired,
                cutoff_ms = cutoff,
                "topology retention"
            );
        }
        Ok(TopologyMaintenance {
            rows_expired: expired,
        })
    }
}

#[async_trait]
impl TopologyStore for SqliteTopologyStore {
    async fn save_snapshot(
        &self,
        cluster: &str,
        at_ms: i64,
        snapshot: Snapshot,
    ) -> Result<SaveOutcome> {
        let cluster = cluster.to_string();
        self.blocking(move |i| i.save(&cluster, at_ms, snapshot))
            .await
    }

    async fn graph_at(&self, cluster: &str, at_ms: i64) -> Result<Option<GraphAt>> {
        let cluster = cluster.to_string();
        self.blocking(move |i| i.graph_at(&cluster, at_ms)).await
    }

    async fn stats_at(&self, cluster: &str, at_ms: i64) -> Result<Option<StatsAt>> {
        let cluster = cluster.to_string();
        self.blocking(move |i| i.stats_at(&cluster, at_ms)).await
    }

    async fn dependency_changes(&self, query: &DependencyQuery) -> Result<Vec<DependencyChange>> {
        let q = query.clone();
        self.blocking(move |i| i.dependency_changes(&q)).await
    }

    async fn topology_clusters(&self) -> Result<Vec<TopologyCluster>> {
        self.blocking(|i| i.clusters()).await
    }

    async fn maintain_topology(&self, now_ms: i64) -> Result<TopologyMaintenance> {
        self.blocking(move |i| i.maintain(now_ms)).await
    }
}
