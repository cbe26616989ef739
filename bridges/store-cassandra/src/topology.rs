//! Topology in Cassandra ([`CassandraTopologyStore`]), with the codecs of
//! [`kube_insight_store::topology`] that SQLite uses.
//!
//! # Tables (see `schema.rs`), all keyed by `(cluster, day)` except two
//! - `topo_keyframes ((cluster, day), t_ms)`: whole graphs.
//! - `topo_deltas ((cluster, day), t_ms)`: changes, only when the graph changed.
//! - `topo_stats ((cluster, day), minute_ms)`: one stats row per minute,
//!   chained from a stats keyframe.
//! - `topo_changes ((cluster, day), t_ms, source, target, directed, change)`.
//! - `topo_coverage ((cluster), day)`: first and last save of each day, so
//!   reads visit only days that hold data (one row per day: ≤ retention rows).
//! - `topo_clusters ((shard), cluster)`: the clusters with topology, and the
//!   time retention kept reconstruction from (one small partition).
//!
//! Saves come from one collector per cluster (a Lease); the writer keeps the
//! last graph and stats chain in memory and, after a restart, rebuilds the
//! graph from the tables and starts with a keyframe.

use super::session::{result_rows, Db};
use async_trait::async_trait;
use kube_insight_core::topology::{Graph, Snapshot};
use kube_insight_store::error::{Error, Result};
use kube_insight_store::topology::{
    chain_stats, check_save_order, decode_delta, decode_graph, decode_stats_into,
    dependency_changes_of, encode_delta, encode_graph, encode_stats, needs_keyframe, stats_row_due,
    DependencyChange, DependencyChangeKind, DependencyQuery, GraphAt, SaveOutcome, StatsAt,
    StatsChain, TopologyCluster, TopologyMaintenance, TopologyStore, MINUTE_MS,
    STATS_CHAIN_MINUTES, STATS_MAX_AGE_MS,
};
use kube_insight_store::StoreOptions;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

const DAY_MS: i64 = 86_400_000;
/// A new keyframe after this many deltas, when the deltas since the last
/// one outweigh it, or after this long (the SQLite defaults).
const MAX_DELTAS_PER_KEYFRAME: usize = 1024;
const MAX_KEYFRAME_AGE_MS: i64 = 6 * 3_600_000;
/// Days a keyframe search goes back (a keyframe is at most 6 h old).
const KEYFRAME_SEARCH_DAYS: usize = 8;
/// Rows one reconstruction may read.
const MAX_RECONSTRUCT_ROWS: usize = 200_000;
/// Write time of retention deletes: above every cell written.
const DELETE_TS_US: i64 = 1 << 62;
/// Write time of `first_ms` cells: smaller values win.
const FIRST_WINS_BASE_US: i64 = 1 << 61;

fn day(t: i64) -> i32 {
    t.div_euclid(DAY_MS) as i32
}

/// The writer's view of one cluster.
struct ClusterState {
    graph: Arc<Graph>,
    first_ms: i64,
    last_save_ms: i64,
    version_ms: i64,
    keyframe_ms: i64,
    keyframe_bytes: u64,
    deltas_since_keyframe: usize,
    delta_bytes_since_keyframe: u64,
    stats: Option<(i64, StatsChain)>,
}

/// The topology signal of the cassandra store.
pub struct CassandraTopologyStore {
    db: Arc<Db>,
    retention_ms: i64,
    states: tokio::sync::Mutex<HashMap<String, ClusterState>>,
    /// Retention horizon set by maintenance (an injected `now` in tests).
    horizon: AtomicI64,
}

impl CassandraTopologyStore {
    pub fn new(db: Arc<Db>, opts: &StoreOptions) -> CassandraTopologyStore {
        CassandraTopologyStore {
            db,
            retention_ms: opts.retention.topology.as_millis() as i64,
            states: tokio::sync::Mutex::new(HashMap::new()),
            horizon: AtomicI64::new(i64::MIN),
        }
    }

    fn horizon(&self) -> i64 {
        self.horizon.load(Ordering::Relaxed)
    }

    /// Days with saves, ascending, and each day's (first, last) save.
    async fn coverage(&self, cluster: &str) -> Result<BTreeMap<i32, (i64, i64)>> {
        const Q: &str = "SELECT day, first_ms, last_ms FROM topo_coverage WHERE cluster = ?";
        let rows: Vec<(i32, Option<i64>, Option<i64>)> = self
            .db
            .rows(Q, (cluster,), 100_000, "topology days")
            .await?;
        let horizon_day = day(self.horizon().max(i64::MIN / 2)) - 1;
        Ok(rows
            .into_iter()
            .filter(|r| r.0 >= horizon_day)
            .filter_map(|(d, f, l)| Some((d, (f?, l?))))
            .collect())
    }

    /// Where retention kept reconstruction from, per cluster.
    async fn clusters(&self) -> Result<Vec<(String, Option<i64>)>> {
        const Q: &str = "SELECT cluster, kept_from FROM topo_clusters WHERE shard = 0";
        self.db.rows(Q, (), 100_000, "topology clusters").await
    }

    /// The newest keyframe at or before `at`: (time, graph).
    async fn keyframe_before(
        &self,
        cluster: &str,
        days: &BTreeMap<i32, (i64, i64)>,
        at: i64,
    ) -> Result<Option<(i64, Graph)>> {
        const Q: &str = "SELECT t_ms, data FROM topo_keyframes WHERE cluster = ? AND day = ? AND t_ms <= ? ORDER BY t_ms DESC LIMIT 1";
        for (&d, _) in days.range(..=day(at)).rev().take(KEYFRAME_SEARCH_DAYS) {
            let r = self.db.exec(Q, (cluster, d, at)).await?;
            if let Some((t, data)) = result_rows::<(i64, Vec<u8>)>(Q, r)?.into_iter().next() {
                return Ok(Some((t, decode_graph(&data)?)));
            }
        }
        Ok(None)
    }

    /// The graph at `at` from the tables: (graph, version).
    async fn reconstruct(
        &self,
        cluster: &str,
        days: &BTreeMap<i32, (i64, i64)>,
        at: i64,
    ) -> Result<Option<(Graph, i64)>> {
        const Q: &str = "SELECT t_ms, data FROM topo_deltas WHERE cluster = ? AND day = ? AND t_ms > ? AND t_ms <= ?";
        let Some((kf, mut graph)) = self.keyframe_before(cluster, days, at).await? else {
            return Ok(None);
        };
        let mut version = kf;
        let mut n = 0usize;
        for (&d, _) in days.range(day(kf)..=day(at)) {
            let rows: Vec<(i64, Vec<u8>)> = self
                .db
                .rows(
                    Q,
                    (cluster, d, kf, at),
                    MAX_RECONSTRUCT_ROWS,
                    "topology deltas",
                )
                .await?;
            n += rows.len();
            if n > MAX_RECONSTRUCT_ROWS {
                return Err(Error::LimitExceeded {
                    what: "topology deltas after one keyframe",
                    limit: MAX_RECONSTRUCT_ROWS,
                });
            }
            for (t, data) in rows {
                graph.apply_owned(decode_delta(&data)?);
                version = t;
            }
        }
        Ok(Some((graph, version)))
    }

    async fn load_state(&self, cluster: &str) -> Result<Option<ClusterState>> {
        let days = self.coverage(cluster).await?;
        let (Some(first), Some(last)) = (
            days.values().map(|v| v.0).min(),
            days.values().map(|v| v.1).max(),
        ) else {
            return Ok(None);
        };
        let Some((graph, version_ms)) = self.reconstruct(cluster, &days, last).await? else {
            return Ok(None);
        };
        Ok(Some(ClusterState {
            graph: Arc::new(graph),
            first_ms: first,
            last_save_ms: last,
            version_ms,
            // Unknown after a restart: the next change writes a keyframe.
            keyframe_ms: i64::MIN / 2,
            keyframe_bytes: 0,
            deltas_since_keyframe: MAX_DELTAS_PER_KEYFRAME,
            delta_bytes_since_keyframe: 0,
            stats: None,
        }))
    }

    async fn save(&self, cluster: &str, at_ms: i64, snap: Snapshot) -> Result<SaveOutcome> {
        const KEYFRAME_W: &str =
            "INSERT INTO topo_keyframes (cluster, day, t_ms, data) VALUES (?, ?, ?, ?)";
        const DELTA_W: &str =
            "INSERT INTO topo_deltas (cluster, day, t_ms, data) VALUES (?, ?, ?, ?)";
        const STATS_W: &str = "INSERT INTO topo_stats (cluster, day, minute_ms, keyframe, data) VALUES (?, ?, ?, ?, ?)";
        const CHANGE_W: &str = "INSERT INTO topo_changes (cluster, day, t_ms, source, target, directed, change) VALUES (?, ?, ?, ?, ?, ?, ?)";
        const FIRST_W: &str =
            "UPDATE topo_coverage USING TIMESTAMP ? SET first_ms = ? WHERE cluster = ? AND day = ?";
        const LAST_W: &str =
            "UPDATE topo_coverage USING TIMESTAMP ? SET last_ms = ? WHERE cluster = ? AND day = ?";
        const CLUSTER_W: &str =
            "UPDATE topo_clusters SET seen_ms = ? WHERE shard = 0 AND cluster = ?";
        let mut states = self.states.lock().await;
        if !states.contains_key(cluster) {
            if let Some(st) = self.load_state(cluster).await? {
                states.insert(cluster.to_string(), st);
            }
        }
        // Taken out: if a write below fails, the next stats row starts a
        // new chain.
        let taken_stats = states.get_mut(cluster).and_then(|s| s.stats.take());
        let state = states.get(cluster);
        if check_save_order(cluster, state.map(|s| s.last_save_ms), at_ms)? {
            return Ok(SaveOutcome::default());
        }
        let mut out = SaveOutcome::default();
        let empty = Graph::default();
        let before = state.map_or(&empty, |s| &s.graph);
        let delta = before.delta_to(&snap.graph);
        let d = day(at_ms);
        let mut jobs: Vec<futures::future::BoxFuture<'_, Result<()>>> = Vec::new();
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
                out.bytes_written += delta_len;
                jobs.push(Box::pin(
                    self.db
                        .write(DELTA_W, (cluster.to_string(), d, at_ms, data)),
                ));
                let changes = dependency_changes_of(cluster, at_ms, &st.graph, &delta);
                for c in &changes {
                    let kind: i32 = match c.kind {
                        DependencyChangeKind::Appeared => 1,
                        DependencyChangeKind::Lost => 0,
                    };
                    out.bytes_written += (c.source.len() + c.target.len() + 10) as u64;
                    jobs.push(Box::pin(self.db.write(
                        CHANGE_W,
                        (
                            cluster.to_string(),
                            d,
                            at_ms,
                            c.source.clone(),
                            c.target.clone(),
                            c.directed,
                            kind,
                        ),
                    )));
                }
                out.dependency_changes = changes.len() as u64;
            }
            let need_kf = needs_keyframe(
                next_kf,
                delta_len,
                at_ms,
                MAX_DELTAS_PER_KEYFRAME,
                MAX_KEYFRAME_AGE_MS,
            );
            if need_kf {
                let data = encode_graph(&snap.graph);
                out.keyframe = true;
                out.bytes_written += data.len() as u64;
                next_kf = Some((at_ms, data.len() as u64, 0, 0));
                jobs.push(Box::pin(
                    self.db
                        .write(KEYFRAME_W, (cluster.to_string(), d, at_ms, data)),
                ));
            } else if let Some(k) = next_kf.as_mut() {
                k.2 += 1;
                k.3 += delta_len;
            }
        }
        // Stats: the first save of each minute.
        let minute = at_ms - at_ms.rem_euclid(MINUTE_MS);
        let new_chain = if let Some(keyframe) =
            stats_row_due(taken_stats.as_ref(), minute, STATS_CHAIN_MINUTES)
        {
            let mut chain = taken_stats.map(|(_, c)| c).unwrap_or_default();
            let data = encode_stats(&mut chain, &snap.stats, keyframe);
            out.stats_written = true;
            out.bytes_written += data.len() as u64;
            jobs.push(Box::pin(self.db.write(
                STATS_W,
                (cluster.to_string(), day(minute), minute, keyframe, data),
            )));
            Some((minute, chain))
        } else {
            taken_stats
        };
        let first_ms = state.map_or(at_ms, |s| s.first_ms);
        let first_at = FIRST_WINS_BASE_US - at_ms.clamp(0, FIRST_WINS_BASE_US / 1000) * 1000;
        let last_at = at_ms.clamp(0, FIRST_WINS_BASE_US / 1000) * 1000;
        if state.is_none_or(|s| day(s.last_save_ms) != d) {
            jobs.push(Box::pin(
                self.db
                    .write(FIRST_W, (first_at, at_ms, cluster.to_string(), d)),
            ));
            jobs.push(Box::pin(
                self.db.write(CLUSTER_W, (at_ms, cluster.to_string())),
            ));
        }
        jobs.push(Box::pin(
            self.db
                .write(LAST_W, (last_at, at_ms, cluster.to_string(), d)),
        ));
        futures::future::try_join_all(jobs).await?;

        // Stored: now the memory follows.
        let (kf_ms, kf_bytes, n, bytes) = next_kf.unwrap_or((at_ms, 0, 0, 0));
        let prev = states.remove(cluster);
        let (graph, version_ms) = match prev {
            Some(p) if delta.is_empty() => (p.graph, p.version_ms),
            _ => (Arc::new(snap.graph), at_ms),
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
                stats: new_chain,
            },
        );
        Ok(out)
    }

    async fn graph(&self, cluster: &str, at_ms: i64) -> Result<Option<GraphAt>> {
        if at_ms < self.horizon() {
            return Ok(None);
        }
        {
            let states = self.states.lock().await;
            if let Some(st) = states.get(cluster) {
                if at_ms >= st.version_ms && at_ms >= st.first_ms {
                    return Ok(Some(GraphAt {
                        graph: st.graph.clone(),
                        version_ms: st.version_ms,
                        first_ms: self.kept_first(cluster, st.first_ms).await?,
                        last_ms: st.last_save_ms,
                    }));
                }
            }
        }
        let days = self.coverage(cluster).await?;
        let (Some(first), Some(last)) = (
            days.values().map(|v| v.0).min(),
            days.values().map(|v| v.1).max(),
        ) else {
            return Ok(None);
        };
        let first = self.kept_first(cluster, first).await?;
        if at_ms < first {
            return Ok(None);
        }
        Ok(self
            .reconstruct(cluster, &days, at_ms)
            .await?
            .map(|(g, version_ms)| GraphAt {
                graph: Arc::new(g),
                version_ms,
                first_ms: first,
                last_ms: last,
            }))
    }

    /// The first save still reconstructible: retention keeps the keyframe
    /// at or before its cutoff.
    async fn kept_first(&self, cluster: &str, first: i64) -> Result<i64> {
        if self.horizon() == i64::MIN {
            return Ok(first);
        }
        let kept = self
            .clusters()
            .await?
            .into_iter()
            .find(|c| c.0 == cluster)
            .and_then(|c| c.1);
        Ok(kept.map_or(first, |k| first.max(k)))
    }

    async fn stats(&self, cluster: &str, at_ms: i64) -> Result<Option<StatsAt>> {
        const KEYS: &str = "SELECT minute_ms, keyframe FROM topo_stats WHERE cluster = ? AND day = ? AND minute_ms <= ? ORDER BY minute_ms DESC LIMIT 64";
        const ROWS: &str = "SELECT minute_ms, data FROM topo_stats WHERE cluster = ? AND day = ? AND minute_ms >= ? AND minute_ms <= ?";
        if at_ms < self.horizon() {
            return Ok(None);
        }
        {
            let states = self.states.lock().await;
            if let Some((m, chain)) = states.get(cluster).and_then(|s| s.stats.as_ref()) {
                if *m <= at_ms && at_ms - *m < MINUTE_MS {
                    return Ok(Some(StatsAt {
                        stats: Arc::new(chain_stats(chain)),
                        minute_ms: *m,
                    }));
                }
            }
        }
        // The minute, and its chain's keyframe (today's and yesterday's rows).
        let (mut minute, mut key) = (None, None);
        'days: for d in [day(at_ms), day(at_ms) - 1] {
            let r = self.db.exec(KEYS, (cluster, d, at_ms)).await?;
            for (m, k) in result_rows::<(i64, Option<bool>)>(KEYS, r)? {
                if minute.is_none() {
                    if at_ms - m > STATS_MAX_AGE_MS {
                        return Ok(None);
                    }
                    minute = Some(m);
                }
                if k.unwrap_or(false) {
                    key = Some(m);
                    break 'days;
                }
            }
        }
        let (Some(minute), Some(key)) = (minute, key) else {
            return Ok(None);
        };
        let mut chain = StatsChain::default();
        for d in day(key)..=day(minute) {
            let r = self.db.exec(ROWS, (cluster, d, key, minute)).await?;
            for (_, data) in result_rows::<(i64, Vec<u8>)>(ROWS, r)? {
                decode_stats_into(&mut chain, &data)?;
            }
        }
        Ok(Some(StatsAt {
            stats: Arc::new(chain_stats(&chain)),
            minute_ms: minute,
        }))
    }

    async fn changes(&self, q: &DependencyQuery) -> Result<Vec<DependencyChange>> {
        const Q: &str = "SELECT t_ms, source, target, directed, change FROM topo_changes WHERE cluster = ? AND day = ? AND t_ms >= ? AND t_ms <= ?";
        let lo = q.range.start_ms.max(self.horizon());
        let hi = q.range.end_ms;
        let limit = q.limit.max(1);
        let clusters: Vec<String> = match &q.cluster {
            Some(c) => vec![c.clone()],
            None => self.clusters().await?.into_iter().map(|c| c.0).collect(),
        };
        let mut out = Vec::new();
        for cluster in clusters {
            let days = self.coverage(&cluster).await?;
            for (&d, _) in days.range(day(lo.max(i64::MIN / 2))..=day(hi.min(i64::MAX / 2))) {
                let rows: Vec<(i64, String, String, bool, i32)> = self
                    .db
                    .rows(
                        Q,
                        (cluster.as_str(), d, lo, hi),
                        limit + 1,
                        "dependency changes",
                    )
                    .await?;
                for (t, source, target, directed, change) in rows {
                    out.push(DependencyChange {
                        cluster: cluster.clone(),
                        at_ms: t,
                        kind: if change == 1 {
                            DependencyChangeKind::Appeared
                        } else {
                            DependencyChangeKind::Lost
                        },
                        edge_id: kube_insight_core::topology::edge_id(&source, &target, directed),
                        source,
                        target,
                        directed,
                    });
                    if out.len() > limit {
                        return Err(Error::LimitExceeded {
                            what: "dependency changes",
                            limit,
                        });
                    }
                }
            }
        }
        // Lost before appeared at the same time and edge.
        out.sort_by(|a, b| {
            a.at_ms
                .cmp(&b.at_ms)
                .then_with(|| a.cluster.cmp(&b.cluster))
                .then_with(|| a.edge_id.cmp(&b.edge_id))
                .then(b.kind.cmp(&a.kind))
        });
        Ok(out)
    }

    async fn topology_clusters_list(&self) -> Result<Vec<TopologyCluster>> {
        let mut out = Vec::new();
        for (cluster, kept) in self.clusters().await? {
            let days = self.coverage(&cluster).await?;
            let (Some(first), Some(last)) = (
                days.values().map(|v| v.0).min(),
                days.values().map(|v| v.1).max(),
            ) else {
                continue;
            };
            let first = match (kept, self.horizon() != i64::MIN) {
                (Some(k), true) => first.max(k),
                _ => first,
            };
            out.push(TopologyCluster {
                cluster,
                first_ms: first,
                last_ms: last,
            });
        }
        out.sort_by(|a, b| a.cluster.cmp(&b.cluster));
        Ok(out)
    }

    /// Retention: the days before the keyframe that reconstructs the
    /// cutoff are deleted (TTLs expire them too); reads ignore what is
    /// before the cutoff.
    async fn maintain(&self, now_ms: i64) -> Result<TopologyMaintenance> {
        const KEPT_W: &str =
            "UPDATE topo_clusters SET kept_from = ? WHERE shard = 0 AND cluster = ?";
        const COUNT: [&str; 4] = [
            "SELECT t_ms FROM topo_keyframes WHERE cluster = ? AND day = ?",
            "SELECT t_ms FROM topo_deltas WHERE cluster = ? AND day = ?",
            "SELECT minute_ms FROM topo_stats WHERE cluster = ? AND day = ?",
            "SELECT t_ms FROM topo_changes WHERE cluster = ? AND day = ?",
        ];
        const DELETE: [&str; 4] = [
            "DELETE FROM topo_keyframes USING TIMESTAMP ? WHERE cluster = ? AND day = ?",
            "DELETE FROM topo_deltas USING TIMESTAMP ? WHERE cluster = ? AND day = ?",
            "DELETE FROM topo_stats USING TIMESTAMP ? WHERE cluster = ? AND day = ?",
            "DELETE FROM topo_changes USING TIMESTAMP ? WHERE cluster = ? AND day = ?",
        ];
        const DEL_DAY: &str =
            "DELETE FROM topo_coverage USING TIMESTAMP ? WHERE cluster = ? AND day = ?";
        let cutoff = now_ms - self.retention_ms;
        let mut m = TopologyMaintenance::default();
        for (cluster, _) in self.clusters().await? {
            let days = self.coverage(&cluster).await?;
            let kept = self
                .keyframe_before(&cluster, &days, cutoff)
                .await?
                .map(|k| k.0);
            let keep_day = match kept {
                Some(k) => day(k),
                None => day(cutoff),
            };
            if let Some(k) = kept {
                self.db.write(KEPT_W, (k, cluster.as_str())).await?;
            }
            for (&d, _) in days.range(..keep_day) {
                for (count, delete) in COUNT.iter().zip(DELETE) {
                    let rows: Vec<(i64,)> = self
                        .db
                        .rows(count, (cluster.as_str(), d), 10_000_000, "topology rows")
                        .await?;
                    m.rows_expired += rows.len() as u64;
                    self.db
                        .write(delete, (DELETE_TS_US, cluster.as_str(), d))
                        .await?;
                }
                self.db
                    .write(DEL_DAY, (DELETE_TS_US, cluster.as_str(), d))
                    .await?;
            }
        }
        self.horizon.fetch_max(cutoff, Ordering::Relaxed);
        Ok(m)
    }
}

#[async_trait]
impl TopologyStore for CassandraTopologyStore {
    async fn save_snapshot(
        &self,
        cluster: &str,
        at_ms: i64,
        snapshot: Snapshot,
    ) -> Result<SaveOutcome> {
        self.save(cluster, at_ms, snapshot).await
    }

    async fn graph_at(&self, cluster: &str, at_ms: i64) -> Result<Option<GraphAt>> {
        self.graph(cluster, at_ms).await
    }

    async fn stats_at(&self, cluster: &str, at_ms: i64) -> Result<Option<StatsAt>> {
        self.stats(cluster, at_ms).await
    }

    async fn dependency_changes(&self, query: &DependencyQuery) -> Result<Vec<DependencyChange>> {
        self.changes(query).await
    }

    async fn topology_clusters(&self) -> Result<Vec<TopologyCluster>> {
        self.topology_clusters_list().await
    }

    async fn maintain_topology(&self, now_ms: i64) -> Result<TopologyMaintenance> {
        self.maintain(now_ms).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_write_times() {
        assert_eq!(day(0), 0);
        assert_eq!(day(-1), -1);
        assert_eq!(day(DAY_MS), 1);
        let first_at = |t: i64| FIRST_WINS_BASE_US - t * 1000;
        assert!(first_at(1_000) > first_at(2_000), "the earlier first wins");
        const { assert!(FIRST_WINS_BASE_US < DELETE_TS_US) };
        // A keyframe is never older than the search reaches.
        const { assert!(MAX_KEYFRAME_AGE_MS < (KEYFRAME_SEARCH_DAYS as i64 - 1) * DAY_MS) };
    }
}
