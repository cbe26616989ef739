//! Metrics in Cassandra.
//!
//! # Tables (see `schema.rs` and ARCHITECTURE.md)
//! - `metrics_head ((cluster, shard, bucket), fp, ts)`: one row per sample
//!   of an open 2 h window, 10-minute buckets, 32 shards by series, short
//!   TTL. A push becomes one unlogged same-partition batch per (shard,
//!   bucket), so a 2,000-series remote-write request is ~32 CQL writes.
//! - `metrics_late ((cluster, fp, day), window_start, ts)`: samples that
//!   arrive after their window closed; merged into the chunk at the next
//!   maintenance.
//! - `metrics_chunks ((cluster, fp, day), window_start)`: immutable
//!   Gorilla chunks of closed windows ([`crate::chunk`]); `metrics_rollups`
//!   their 5-minute summaries.
//! - `metrics_series ((cluster, day, metric), fp)`: the series index, one
//!   row per series and day with its labels and first/last sample; the
//!   first/last cells are written with `USING TIMESTAMP` derived from the
//!   value, so concurrent writers converge on min/max without reading.
//! - `metrics_names ((cluster, day), metric)`, `clusters ((day), cluster)`.
//! - `metrics_pending ((cluster, day), window_start, shard, fp)`: the work
//!   list of maintenance: head windows to compact (fp = [`HEAD`]) and late
//!   samples to merge (fp = the series).
//!
//! # Dedup
//! Every writer keeps, per active series, the timestamps of its recent head
//! buckets; older buckets are loaded from Cassandra when a sample needs
//! them. A (series, timestamp) pair is therefore written once per process,
//! and the counts of [`WriteOutcome`] are exact for one writer. Writers of
//! other processes may re-write a sample: the row is the same key, so it is
//! still stored once.

use super::session::{result_rows, Db, MAX_BATCH_BYTES};
use crate::chunk;
use crate::entity_tree::{self, EntitySeries};
use crate::error::{Error, Result};
use crate::metrics::{
    EntityQuery, MetricBatch, Resolution, RollupField, SelectQuery, SeriesQuery, WriteOutcome,
};
use crate::series_cap::CapGate;
use crate::sqlite::codec::{decode_labels, encode_labels};
use crate::{MaintenanceReport, StoreOptions};
use futures::stream::{self, StreamExt, TryStreamExt};
use kube_insight_core::rollup::{self, RollupBucket};
use kube_insight_core::{Entity, Labels, MatchOp, Matcher, Sample, TimeRange, TimeSeries};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

pub const HEAD_SHARDS: i64 = 32;
pub const HEAD_BUCKET_MS: i64 = 10 * 60 * 1000;
pub const DAY_MS: i64 = 86_400_000;
/// `fp` of a pending row that stands for a whole head (window, shard).
pub const HEAD: i64 = i64::MIN;
/// A series' `last_ms` in the index is rewritten when it moved this far.
const INDEX_LAST_STEP_MS: i64 = 5 * 60 * 1000;
/// Maintenance compacts a window this long after the writers stopped
/// writing to its head (clock skew between pods, requests in flight).
const COMPACT_MARGIN_MS: i64 = 2 * 60 * 1000;
/// Write time of the `first_ms` cell: smaller values win.
const FIRST_WINS_BASE_US: i64 = 1 << 61;
/// Write time of retention deletes: above every cell we write.
const DELETE_TS_US: i64 = 1 << 62;
/// Parallel reads of one query.
const READ_FANOUT: usize = 32;
/// Index rows one query may read.
const MAX_INDEX_ROWS: usize = 2_000_000;

/// Runs futures with at most [`READ_FANOUT`] at a time, in order.
async fn all<T, F: std::future::Future<Output = Result<T>>>(futs: Vec<F>) -> Result<Vec<T>> {
    stream::iter(futs).buffered(READ_FANOUT).try_collect().await
}

/// The day number of a timestamp.
pub fn day(ts: i64) -> i32 {
    ts.div_euclid(DAY_MS) as i32
}

/// The head bucket (start, ms) of a timestamp.
pub fn bucket(ts: i64) -> i64 {
    ts.div_euclid(HEAD_BUCKET_MS) * HEAD_BUCKET_MS
}

/// The head shard of a series.
pub fn shard(fp: i64) -> i32 {
    (fp as u64 % HEAD_SHARDS as u64) as i32
}

/// The series id: the labels' fingerprint mixed with the cluster.
pub fn series_fp(cluster: &str, labels: &Labels) -> i64 {
    let c = xxhash_rust::xxh3::xxh3_64(cluster.as_bytes());
    (labels.fingerprint() ^ c.rotate_left(29)) as i64
}

fn bits(v: f64) -> i64 {
    v.to_bits() as i64
}

fn value(b: i64) -> f64 {
    f64::from_bits(b as u64)
}

/// One writer's knowledge of a series.
struct SeriesState {
    cluster: Arc<str>,
    metric: Arc<str>,
    labels: Arc<[u8]>,
    /// Every timestamp at or after this is in `seen`.
    complete_from: i64,
    /// Stored timestamps by head bucket (sorted), for loaded buckets.
    seen: BTreeMap<i64, Vec<i64>>,
    /// Timestamps being written right now (a duplicate of one is written
    /// again, in case the first write fails).
    pending: Vec<i64>,
    /// Index rows written: day → (first, last).
    indexed: BTreeMap<i32, (i64, i64)>,
    /// Newest sample per day not yet in the index.
    index_dirty: BTreeMap<i32, i64>,
    last_write_ms: i64,
}

impl SeriesState {
    fn loaded(&self, b: i64) -> bool {
        b >= self.complete_from || self.seen.contains_key(&b)
    }
}

#[derive(Default)]
struct Cache {
    series: HashMap<i64, SeriesState>,
    active: HashMap<Arc<str>, u64>,
    marked: HashSet<(Arc<str>, i64, i32)>,
    names: HashSet<(Arc<str>, i32, Arc<str>)>,
    clusters: HashSet<(i32, Arc<str>)>,
    interned: HashSet<Arc<str>>,
    /// The series cap's counts of the clusters at it.
    cap_gate: CapGate,
}

impl Cache {
    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.interned.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.interned.insert(a.clone());
        a
    }
}

/// The metrics part of the cassandra store.
pub struct Metrics {
    db: Arc<Db>,
    opts: StoreOptions,
    cache: Mutex<Cache>,
    /// Retention horizon set by maintenance (an injected `now` in tests).
    horizon: AtomicI64,
    /// Days before this were deleted by retention.
    expired_before_day: AtomicI64,
    /// The writer's clock never runs behind the latest maintenance `now`
    /// (injected in tests).
    now_floor: AtomicI64,
}

/// A prepared series of a write.
struct Prep {
    fp: i64,
    labels: Labels,
    cluster: String,
    samples: Vec<(i64, f64)>,
}

/// One sample to write.
struct Row {
    fp: i64,
    ts: i64,
    v: f64,
}

impl Metrics {
    pub fn new(db: Arc<Db>, opts: StoreOptions) -> Metrics {
        Metrics {
            db,
            opts,
            cache: Mutex::new(Cache::default()),
            horizon: AtomicI64::new(i64::MIN),
            expired_before_day: AtomicI64::new(i64::MIN),
            now_floor: AtomicI64::new(i64::MIN),
        }
    }

    fn now_ms(&self) -> i64 {
        kube_insight_core::time::now_ms().max(self.now_floor.load(Ordering::Relaxed))
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn window_ms(&self) -> i64 {
        (self.opts.chunk_window.as_millis() as i64).max(HEAD_BUCKET_MS)
    }

    fn window_start(&self, ts: i64) -> i64 {
        ts.div_euclid(self.window_ms()) * self.window_ms()
    }

    fn grace_ms(&self) -> i64 {
        self.opts.head_grace.as_millis() as i64
    }

    fn head_ttl_ms(&self) -> i64 {
        super::schema::head_ttl(&self.opts).as_millis() as i64
    }

    /// Is the window of `ts` closed for head writes at `now`?
    fn closed(&self, ts: i64, now: i64) -> bool {
        self.window_start(ts) + self.window_ms() + self.grace_ms() <= now
    }

    /// The oldest timestamp kept.
    pub fn horizon(&self, now: i64) -> i64 {
        let retention = self.opts.retention.metrics.as_millis() as i64;
        (now - retention).max(self.horizon.load(Ordering::Relaxed))
    }

    fn ttl_secs(&self, ts: i64, now: i64) -> Option<i32> {
        let retention = self.opts.retention.metrics.as_millis() as i64;
        let left = (ts + retention - now) / 1000;
        (left > 0).then(|| left.min(i64::from(super::schema::max_ttl_secs())) as i32)
    }

    // -----------------------------------------------------------------
    // Writes

    pub async fn write(&self, batch: MetricBatch) -> Result<WriteOutcome> {
        let now = self.now_ms();
        let oldest = self.horizon(now);
        let mut out = WriteOutcome::default();
        let mut preps = Vec::with_capacity(batch.series.len());
        for ts in batch.series {
            let mut samples: Vec<(i64, f64)> = ts
                .samples
                .iter()
                .map(|s| (s.timestamp_ms, s.value))
                .collect();
            samples.sort_by_key(|s| s.0);
            let before = samples.len();
            samples.dedup_by_key(|s| s.0);
            out.samples_duplicate += (before - samples.len()) as u64;
            let before = samples.len();
            samples.retain(|s| s.0 >= oldest);
            out.samples_too_old += (before - samples.len()) as u64;
            if samples.is_empty() {
                continue;
            }
            preps.push(Prep {
                fp: series_fp(&batch.cluster, &ts.labels),
                labels: ts.labels,
                cluster: batch.cluster.clone(),
                samples,
            });
        }
        if preps.is_empty() {
            return Ok(out);
        }
        // 1. Series this writer does not know: ask the index.
        let unknown: Vec<&Prep> = {
            let c = self.cache();
            preps
                .iter()
                .filter(|p| !c.series.contains_key(&p.fp))
                .collect()
        };
        let found = self.lookup_series(&unknown).await?;
        let mut rejected: HashSet<i64> = HashSet::new();
        {
            let mut guard = self.cache();
            let c = &mut *guard;
            let since = now.saturating_sub(self.grace_ms());
            for p in &preps {
                if c.series.contains_key(&p.fp) || rejected.contains(&p.fp) {
                    continue;
                }
                let known = found.get(&p.fp).copied();
                let cluster = c.intern(&p.cluster);
                let active = c.active.get(&cluster).copied().unwrap_or(0);
                let series = &c.series;
                if known.is_none()
                    && !c.cap_gate.admit(
                        &cluster,
                        active,
                        self.opts.max_series_per_cluster as u64,
                        now,
                        || live_in(series, &cluster, since),
                    )
                {
                    rejected.insert(p.fp);
                    continue;
                }
                let complete_from = match known {
                    // Whatever another writer stored up to its last index
                    // update (plus the update's step) must be loaded.
                    Some(last) => bucket(last + INDEX_LAST_STEP_MS + 60_000) + HEAD_BUCKET_MS,
                    None => i64::MIN,
                };
                if known.is_none() {
                    out.series_created += 1;
                }
                let metric = c.intern(p.labels.get("__name__").unwrap_or(""));
                *c.active.entry(cluster.clone()).or_insert(0) += 1;
                c.series.insert(
                    p.fp,
                    SeriesState {
                        cluster,
                        metric,
                        labels: Arc::from(encode_labels(&p.labels)),
                        complete_from,
                        seen: BTreeMap::new(),
                        pending: Vec::new(),
                        indexed: BTreeMap::new(),
                        index_dirty: BTreeMap::new(),
                        last_write_ms: now,
                    },
                );
            }
        }
        for p in preps.iter().filter(|p| rejected.contains(&p.fp)) {
            out.series_rejected_limit += 1;
            out.samples_rejected_limit += p.samples.len() as u64;
        }
        preps.retain(|p| !rejected.contains(&p.fp));
        // 2. Buckets whose stored timestamps are not in memory: load them.
        let mut rows: Vec<Row> = Vec::new();
        let mut index: Vec<IndexWrite> = Vec::new();
        let mut markers: Vec<(Arc<str>, i64, i32, i64)> = Vec::new();
        let mut extras: Vec<(Arc<str>, i32, Arc<str>, bool)> = Vec::new();
        let mut mine: HashSet<(i64, i64)> = HashSet::new();
        let mut waits: Vec<Row> = Vec::new();
        for _attempt in 0..4 {
            let missing: Vec<(i64, String, i64)> = {
                let c = self.cache();
                let mut m = BTreeSet::new();
                for p in &preps {
                    let Some(st) = c.series.get(&p.fp) else {
                        continue;
                    };
                    for &(ts, _) in &p.samples {
                        if !st.loaded(bucket(ts)) {
                            m.insert((p.fp, p.cluster.clone(), bucket(ts)));
                        }
                    }
                }
                m.into_iter().collect()
            };
            if !missing.is_empty() {
                let loaded = self.load_buckets(&missing).await?;
                let mut c = self.cache();
                for ((fp, b), mut ts) in loaded {
                    if let Some(st) = c.series.get_mut(&fp) {
                        let e = st.seen.entry(b).or_default();
                        e.append(&mut ts);
                        e.sort_unstable();
                        e.dedup();
                    }
                }
                continue;
            }
            // 3. Classify under the lock: every bucket is in memory.
            let mut c = self.cache();
            let mut still_missing = false;
            'check: for p in &preps {
                if let Some(st) = c.series.get(&p.fp) {
                    for &(ts, _) in &p.samples {
                        if !st.loaded(bucket(ts)) {
                            still_missing = true;
                            break 'check;
                        }
                    }
                }
            }
            if still_missing {
                continue;
            }
            let c = &mut *c;
            for p in &preps {
                let Some(st) = c.series.get_mut(&p.fp) else {
                    continue;
                };
                st.last_write_ms = now;
                let mut days: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
                for &(ts, v) in &p.samples {
                    let seen = st.seen.entry(bucket(ts)).or_default();
                    match seen.binary_search(&ts) {
                        Ok(_) => {
                            out.samples_duplicate += 1;
                            // Another write is storing it right now: make
                            // sure it lands before answering (below).
                            if st.pending.contains(&ts) && !mine.contains(&(p.fp, ts)) {
                                waits.push(Row { fp: p.fp, ts, v });
                            }
                            continue;
                        }
                        Err(i) => seen.insert(i, ts),
                    }
                    out.samples_written += 1;
                    mine.insert((p.fp, ts));
                    st.pending.push(ts);
                    rows.push(Row { fp: p.fp, ts, v });
                    let d = days.entry(day(ts)).or_insert((ts, ts));
                    d.0 = d.0.min(ts);
                    d.1 = d.1.max(ts);
                    let w = self.window_start(ts);
                    let sh = shard(p.fp);
                    if self.closed(ts, now) {
                        markers.push((st.cluster.clone(), w, sh, p.fp));
                    } else if c.marked.insert((st.cluster.clone(), w, sh)) {
                        markers.push((st.cluster.clone(), w, sh, HEAD));
                    }
                }
                for (d, (lo, hi)) in days {
                    match st.indexed.get(&d).copied() {
                        None => {
                            index.push(IndexWrite::full(st, p.fp, d, lo, hi));
                            st.indexed.insert(d, (lo, hi));
                            if c.names.insert((st.cluster.clone(), d, st.metric.clone())) {
                                extras.push((st.cluster.clone(), d, st.metric.clone(), true));
                            }
                            if c.clusters.insert((d, st.cluster.clone())) {
                                extras.push((st.cluster.clone(), d, st.metric.clone(), false));
                            }
                        }
                        Some((first, last)) => {
                            if lo < first {
                                index.push(IndexWrite::first(st, p.fp, d, lo));
                            }
                            if hi > last + INDEX_LAST_STEP_MS {
                                index.push(IndexWrite::last(st, p.fp, d, hi));
                                st.index_dirty.remove(&d);
                            } else if hi > last {
                                let e = st.index_dirty.entry(d).or_insert(hi);
                                *e = (*e).max(hi);
                            }
                            let e = st.indexed.entry(d).or_insert((lo, hi));
                            e.0 = e.0.min(lo);
                            if hi > last + INDEX_LAST_STEP_MS {
                                e.1 = hi;
                            }
                        }
                    }
                }
            }
            break;
        }
        let result = self.persist(&rows, &index, &markers, &extras, now).await;
        // Settle the reservations: on failure nothing of this write counts
        // as stored, so a retry writes it again.
        {
            let mut c = self.cache();
            for r in &rows {
                if let Some(st) = c.series.get_mut(&r.fp) {
                    if let Some(i) = st.pending.iter().position(|&t| t == r.ts) {
                        st.pending.swap_remove(i);
                    }
                    if result.is_err() {
                        if let Some(v) = st.seen.get_mut(&bucket(r.ts)) {
                            if let Ok(i) = v.binary_search(&r.ts) {
                                v.remove(i);
                            }
                        }
                    }
                }
            }
            if result.is_err() {
                for m in &markers {
                    if m.3 == HEAD {
                        c.marked.remove(&(m.0.clone(), m.1, m.2));
                    }
                }
                for w in &index {
                    if let Some(st) = c.series.get_mut(&w.fp) {
                        st.indexed.remove(&w.day);
                    }
                }
                for e in &extras {
                    if e.3 {
                        c.names.remove(&(e.0.clone(), e.1, e.2.clone()));
                    } else {
                        c.clusters.remove(&(e.1, e.0.clone()));
                    }
                }
            }
        }
        result?;
        self.settle_in_flight(waits, now).await?;
        Ok(out)
    }

    /// Duplicates of samples another write of this process was storing:
    /// waits for that write; if it failed (the sample is no longer
    /// reserved), stores the sample here, so an `Ok` always means stored.
    async fn settle_in_flight(&self, mut waits: Vec<Row>, now: i64) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.db.config.request_timeout * 3;
        while !waits.is_empty() {
            let mut lost = Vec::new();
            let mut marks = Vec::new();
            {
                let mut c = self.cache();
                let c = &mut *c;
                waits.retain(|r| {
                    let Some(st) = c.series.get_mut(&r.fp) else {
                        return false;
                    };
                    if st.pending.contains(&r.ts) {
                        return true; // still in flight
                    }
                    let seen = st.seen.entry(bucket(r.ts)).or_default();
                    if let Err(i) = seen.binary_search(&r.ts) {
                        // The other write failed: this one stores it.
                        seen.insert(i, r.ts);
                        st.pending.push(r.ts);
                        lost.push(Row {
                            fp: r.fp,
                            ts: r.ts,
                            v: r.v,
                        });
                        let (w, sh) = (self.window_start(r.ts), shard(r.fp));
                        if self.closed(r.ts, now) {
                            marks.push((st.cluster.clone(), w, sh, r.fp));
                        } else if c.marked.insert((st.cluster.clone(), w, sh)) {
                            marks.push((st.cluster.clone(), w, sh, HEAD));
                        }
                    }
                    false
                });
            }
            if !lost.is_empty() {
                let result = self.persist(&lost, &[], &marks, &[], now).await;
                let mut c = self.cache();
                for r in &lost {
                    if let Some(st) = c.series.get_mut(&r.fp) {
                        if let Some(i) = st.pending.iter().position(|&t| t == r.ts) {
                            st.pending.swap_remove(i);
                        }
                        if result.is_err() {
                            if let Some(v) = st.seen.get_mut(&bucket(r.ts)) {
                                if let Ok(i) = v.binary_search(&r.ts) {
                                    v.remove(i);
                                }
                            }
                        }
                    }
                }
                result?;
            }
            if waits.is_empty() {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::Unavailable(
                    "a concurrent write of the same samples did not finish in time; retry".into(),
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// Index rows of series this process has not seen: `fp → last_ms`.
    async fn lookup_series(&self, unknown: &[&Prep]) -> Result<HashMap<i64, i64>> {
        const Q: &str = "SELECT last_ms FROM metrics_series WHERE cluster = ? AND day = ? AND metric = ? AND fp = ?";
        let found: Vec<Option<(i64, i64)>> = all(unknown
            .iter()
            .map(|p| {
                let last = p.samples.last().map(|s| s.0).unwrap_or(0);
                let metric = p.labels.get("__name__").unwrap_or("").to_string();
                let cluster = p.cluster.clone();
                let fp = p.fp;
                async move {
                    let mut best: Option<i64> = None;
                    // Today's row, else yesterday's (a series crossing midnight).
                    for d in [day(last), day(last) - 1] {
                        let r = self
                            .db
                            .exec(Q, (cluster.as_str(), d, metric.as_str(), fp))
                            .await?;
                        let rows: Vec<(Option<i64>,)> = result_rows(Q, r)?;
                        if let Some((Some(l),)) = rows.into_iter().next() {
                            best = Some(best.map_or(l, |b: i64| b.max(l)));
                            break;
                        }
                    }
                    Ok::<_, Error>(best.map(|l| (fp, l)))
                }
            })
            .collect::<Vec<_>>())
        .await?;
        Ok(found.into_iter().flatten().collect())
    }

    /// Stored timestamps of (series, head bucket): head rows, late rows and
    /// the chunk of the bucket's window.
    async fn load_buckets(
        &self,
        missing: &[(i64, String, i64)],
    ) -> Result<Vec<((i64, i64), Vec<i64>)>> {
        const HEAD_Q: &str =
            "SELECT ts FROM metrics_head WHERE cluster = ? AND shard = ? AND bucket = ? AND fp = ?";
        const LATE_Q: &str = "SELECT ts FROM metrics_late WHERE cluster = ? AND fp = ? AND day = ? AND window_start = ?";
        all(missing
            .iter()
            .map(|(fp, cluster, b)| async move {
                let (fp, b) = (*fp, *b);
                let w = self.window_start(b);
                let r = self
                    .db
                    .exec(HEAD_Q, (cluster.as_str(), shard(fp), b, fp))
                    .await?;
                let mut ts: Vec<i64> = result_rows::<(i64,)>(HEAD_Q, r)?
                    .into_iter()
                    .map(|r| r.0)
                    .collect();
                let r = self
                    .db
                    .exec(LATE_Q, (cluster.as_str(), fp, day(w), w))
                    .await?;
                ts.extend(result_rows::<(i64,)>(LATE_Q, r)?.into_iter().map(|r| r.0));
                if let Some(c) = self.read_chunk(cluster, fp, w).await? {
                    ts.extend(c.into_iter().map(|s| s.0));
                }
                ts.retain(|&t| bucket(t) == b);
                Ok::<_, Error>(((fp, b), ts))
            })
            .collect::<Vec<_>>())
        .await
    }

    async fn read_chunk(&self, cluster: &str, fp: i64, w: i64) -> Result<Option<Vec<(i64, f64)>>> {
        const Q: &str = "SELECT data FROM metrics_chunks WHERE cluster = ? AND fp = ? AND day = ? AND window_start = ?";
        let r = self.db.exec(Q, (cluster, fp, day(w), w)).await?;
        let rows: Vec<(Vec<u8>,)> = result_rows(Q, r)?;
        match rows.into_iter().next() {
            None => Ok(None),
            Some((data,)) => chunk::decode(&data)
                .map(Some)
                .map_err(|e| Error::Corrupt(format!("chunk of series {fp} at {w}: {e}"))),
        }
    }

    /// Writes rows, index entries and markers; `Ok` means all are durable.
    async fn persist(
        &self,
        rows: &[Row],
        index: &[IndexWrite],
        markers: &[(Arc<str>, i64, i32, i64)],
        extras: &[(Arc<str>, i32, Arc<str>, bool)],
        now: i64,
    ) -> Result<()> {
        const HEAD_W: &str = "INSERT INTO metrics_head (cluster, shard, bucket, fp, ts, value) VALUES (?, ?, ?, ?, ?, ?)";
        const LATE_W: &str = "INSERT INTO metrics_late (cluster, fp, day, window_start, ts, value) VALUES (?, ?, ?, ?, ?, ?) USING TTL ?";
        const MARK_W: &str = "INSERT INTO metrics_pending (cluster, day, window_start, shard, fp) VALUES (?, ?, ?, ?, ?)";
        const NAME_W: &str = "INSERT INTO metrics_names (cluster, day, metric) VALUES (?, ?, ?)";
        const CLUSTER_W: &str = "INSERT INTO clusters (day, cluster) VALUES (?, ?)";
        let cluster_of: HashMap<i64, Arc<str>> = {
            let c = self.cache();
            rows.iter()
                .filter_map(|r| c.series.get(&r.fp).map(|s| (r.fp, s.cluster.clone())))
                .collect()
        };
        type HeadRow = (Arc<str>, i32, i64, i64, i64, i64);
        type LateRow = (Arc<str>, i64, i32, i64, i64, i64, i32);
        let mut head: BTreeMap<(Arc<str>, i32, i64), Vec<HeadRow>> = BTreeMap::new();
        let mut late: BTreeMap<(Arc<str>, i64, i32), Vec<LateRow>> = BTreeMap::new();
        for r in rows {
            let Some(cluster) = cluster_of.get(&r.fp) else {
                continue;
            };
            if self.closed(r.ts, now) {
                let Some(ttl) = self.ttl_secs(r.ts, now) else {
                    continue;
                };
                let w = self.window_start(r.ts);
                late.entry((cluster.clone(), r.fp, day(w)))
                    .or_default()
                    .push((cluster.clone(), r.fp, day(w), w, r.ts, bits(r.v), ttl));
            } else {
                let (sh, b) = (shard(r.fp), bucket(r.ts));
                head.entry((cluster.clone(), sh, b)).or_default().push((
                    cluster.clone(),
                    sh,
                    b,
                    r.fp,
                    r.ts,
                    bits(r.v),
                ));
            }
        }
        // ~40 bytes of values per row: stay under the batch warning.
        let per_batch = |cluster: &str| (MAX_BATCH_BYTES / (cluster.len() + 44)).max(1);
        let mut jobs: Vec<futures::future::BoxFuture<'_, Result<()>>> = Vec::new();
        for ((cluster, _, _), rows) in head {
            for part in rows.chunks(per_batch(&cluster)) {
                jobs.push(Box::pin(self.db.write_batch(HEAD_W, part.to_vec())));
            }
        }
        for ((cluster, _, _), rows) in late {
            for part in rows.chunks(per_batch(&cluster)) {
                jobs.push(Box::pin(self.db.write_batch(LATE_W, part.to_vec())));
            }
        }
        for (cluster, w, sh, fp) in markers {
            jobs.push(Box::pin(
                self.db
                    .write(MARK_W, (cluster.clone(), day(*w), *w, *sh, *fp)),
            ));
        }
        for w in index {
            jobs.push(Box::pin(
                w.run(&self.db, self.ttl_secs(w.ts(), now).unwrap_or(60)),
            ));
        }
        for (cluster, d, metric, is_name) in extras {
            if *is_name {
                jobs.push(Box::pin(
                    self.db.write(NAME_W, (cluster.clone(), *d, metric.clone())),
                ));
            } else {
                jobs.push(Box::pin(self.db.write(CLUSTER_W, (*d, cluster.clone()))));
            }
        }
        all(jobs).await?;
        Ok(())
    }

    // -----------------------------------------------------------------
    // Reads

    /// Days to read for `range`, within retention and not in the future.
    fn days(&self, range: TimeRange, now: i64) -> Vec<i32> {
        let start = range.start_ms.max(self.horizon(now));
        let end = range.end_ms.min(now + DAY_MS);
        if start > end {
            return Vec::new();
        }
        (day(start)..=day(end)).collect()
    }

    async fn clusters(&self, matchers: &[Matcher], days: &[i32]) -> Result<Vec<String>> {
        const Q: &str = "SELECT cluster FROM clusters WHERE day = ?";
        if let Some(m) = matchers
            .iter()
            .find(|m| m.name == "cluster" && m.op == MatchOp::Equal)
        {
            return Ok(vec![m.value.clone()]);
        }
        let per_day: Vec<Vec<(String,)>> = all(days
            .iter()
            .map(|&d| async move {
                self.db
                    .rows::<(String,)>(Q, (d,), 100_000, "clusters")
                    .await
            })
            .collect::<Vec<_>>())
        .await?;
        let mut set: BTreeSet<String> = per_day.into_iter().flatten().map(|r| r.0).collect();
        for m in matchers.iter().filter(|m| m.name == "cluster") {
            set.retain(|c| m.matches_value(c));
        }
        Ok(set.into_iter().collect())
    }

    /// The clusters of the `clusters ((day), cluster)` index in the days of
    /// `range`: one partition read per day, never a series read.
    pub async fn clusters_seen(
        &self,
        range: TimeRange,
        limit: usize,
    ) -> Result<Vec<crate::metrics::ClusterSeen>> {
        let days = self.days(range, kube_insight_core::time::now_ms());
        let names = self.clusters(&[], &days).await?;
        if names.len() > limit {
            return Err(Error::LimitExceeded {
                what: "clusters",
                limit,
            });
        }
        Ok(names
            .into_iter()
            .map(|cluster| crate::metrics::ClusterSeen {
                cluster,
                last_seen_ms: None,
                series: None,
            })
            .collect())
    }

    /// Index rows of series matching `matchers` in the days of `range`,
    /// merged over days.
    async fn candidates(
        &self,
        matchers: &[Matcher],
        range: TimeRange,
        now: i64,
    ) -> Result<Vec<Candidate>> {
        const NAMES: &str = "SELECT metric FROM metrics_names WHERE cluster = ? AND day = ?";
        const SERIES: &str = "SELECT fp, labels, first_ms, last_ms FROM metrics_series WHERE cluster = ? AND day = ? AND metric = ?";
        let days = self.days(range, now);
        if days.is_empty() {
            return Ok(Vec::new());
        }
        let clusters = self.clusters(matchers, &days).await?;
        let name_eq = matchers
            .iter()
            .find(|m| m.name == "__name__" && m.op == MatchOp::Equal)
            .map(|m| m.value.clone());
        let mut parts: Vec<(String, i32, String)> = Vec::new();
        for cluster in &clusters {
            for &d in &days {
                match &name_eq {
                    Some(n) => parts.push((cluster.clone(), d, n.clone())),
                    None => {
                        let names: Vec<(String,)> = self
                            .db
                            .rows(NAMES, (cluster.as_str(), d), 1_000_000, "metric names")
                            .await?;
                        for (n,) in names {
                            if matchers
                                .iter()
                                .filter(|m| m.name == "__name__")
                                .all(|m| m.matches_value(&n))
                            {
                                parts.push((cluster.clone(), d, n));
                            }
                        }
                    }
                }
            }
        }
        type IndexRow = (i64, Option<Vec<u8>>, Option<i64>, Option<i64>);
        let fetched: Vec<(String, i32, Vec<IndexRow>)> = all(parts
            .into_iter()
            .map(|(cluster, d, metric)| async move {
                let rows = self
                    .db
                    .rows(
                        SERIES,
                        (cluster.as_str(), d, metric.as_str()),
                        MAX_INDEX_ROWS,
                        "series",
                    )
                    .await?;
                Ok::<_, Error>((cluster, d, rows))
            })
            .collect::<Vec<_>>())
        .await?;
        let horizon = self.horizon(now);
        let mut by_fp: HashMap<(String, i64), Candidate> = HashMap::new();
        let mut total = 0usize;
        for (cluster, d, rows) in fetched {
            for (fp, labels, first, last) in rows {
                total += 1;
                // A row whose labels cell is gone (TTL) is not usable.
                let Some(labels) = labels else {
                    continue;
                };
                if total > MAX_INDEX_ROWS {
                    return Err(Error::LimitExceeded {
                        what: "series index rows",
                        limit: MAX_INDEX_ROWS,
                    });
                }
                let (first, last) = (first.unwrap_or(i64::MIN), last.unwrap_or(i64::MAX));
                if last < horizon {
                    continue;
                }
                match by_fp.get_mut(&(cluster.clone(), fp)) {
                    Some(c) => {
                        c.first = c.first.min(first);
                        c.last = c.last.max(last);
                        c.days.push(d);
                    }
                    None => {
                        let labels = decode_labels(&labels)?;
                        if !matchers.iter().all(|m| m.matches(&labels)) {
                            continue;
                        }
                        by_fp.insert(
                            (cluster.clone(), fp),
                            Candidate {
                                cluster: cluster.clone(),
                                fp,
                                labels,
                                first: first.max(horizon),
                                last,
                                days: vec![d],
                            },
                        );
                    }
                }
            }
        }
        let mut out: Vec<Candidate> = by_fp.into_values().collect();
        for c in &mut out {
            c.days.sort_unstable();
            c.days.dedup();
        }
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(out)
    }

    /// The samples of one series within `range`: chunks, late rows and
    /// the head, deduplicated by timestamp (chunk first), sorted.
    async fn read_series(
        &self,
        c: &Candidate,
        range: TimeRange,
        now: i64,
    ) -> Result<Vec<(i64, f64)>> {
        const CHUNKS: &str = "SELECT window_start, data FROM metrics_chunks WHERE cluster = ? AND fp = ? AND day = ? AND window_start >= ? AND window_start <= ?";
        const LATE: &str =
            "SELECT ts, value FROM metrics_late WHERE cluster = ? AND fp = ? AND day = ?";
        const HEAD_Q: &str = "SELECT ts, value FROM metrics_head WHERE cluster = ? AND shard = ? AND bucket = ? AND fp = ? AND ts >= ? AND ts <= ?";
        let lo = range.start_ms.max(self.horizon(now));
        let hi = range.end_ms;
        if lo > hi {
            return Ok(Vec::new());
        }
        let cluster = c.cluster.as_str();
        let mut merged: BTreeMap<i64, f64> = BTreeMap::new();
        let w_lo = self.window_start(lo);
        for &d in &c.days {
            let r = self.db.exec(CHUNKS, (cluster, c.fp, d, w_lo, hi)).await?;
            for (w, data) in result_rows::<(i64, Vec<u8>)>(CHUNKS, r)? {
                let samples = chunk::decode(&data)
                    .map_err(|e| Error::Corrupt(format!("chunk of series {} at {w}: {e}", c.fp)))?;
                for (t, v) in samples {
                    if t >= lo && t <= hi {
                        merged.entry(t).or_insert(v);
                    }
                }
            }
            let r = self.db.exec(LATE, (cluster, c.fp, d)).await?;
            for (t, v) in result_rows::<(i64, i64)>(LATE, r)? {
                if t >= lo && t <= hi {
                    merged.entry(t).or_insert(value(v));
                }
            }
        }
        // The head: buckets of days the series was indexed, still alive.
        let head_lo = lo.max(now - self.head_ttl_ms());
        let head_hi = hi.min(now + self.window_ms() + self.grace_ms());
        if head_lo <= head_hi {
            let buckets: Vec<i64> = (bucket(head_lo)..=bucket(head_hi))
                .step_by(HEAD_BUCKET_MS as usize)
                .filter(|b| c.days.binary_search(&day(*b)).is_ok())
                .collect();
            let parts: Vec<Vec<(i64, i64)>> = all(buckets
                .into_iter()
                .map(|b| async move {
                    let r = self
                        .db
                        .exec(HEAD_Q, (cluster, shard(c.fp), b, c.fp, lo, hi))
                        .await?;
                    result_rows::<(i64, i64)>(HEAD_Q, r)
                })
                .collect::<Vec<_>>())
            .await?;
            for (t, v) in parts.into_iter().flatten() {
                merged.entry(t).or_insert(value(v));
            }
        }
        Ok(merged.into_iter().collect())
    }

    /// One synthetic sample per 5-minute bucket in `range`: the stored
    /// rollups of sealed windows, then rollups computed here from the raw
    /// samples of the windows after the last sealed one (whole windows, as
    /// sealing computes them, so both agree). A window left unsealed behind a
    /// sealed one is missed here until it is sealed.
    async fn read_series_rollup(
        &self,
        c: &Candidate,
        range: TimeRange,
        now: i64,
        field: RollupField,
    ) -> Result<Vec<(i64, f64)>> {
        const ROLLUPS: &str = "SELECT window_start, data FROM metrics_rollups WHERE cluster = ? AND fp = ? AND day = ? AND window_start > ? AND window_start <= ?";
        let w = self.window_ms();
        let lo = range.start_ms.max(self.horizon(now));
        let hi = range.end_ms;
        if lo > hi {
            return Ok(Vec::new());
        }
        let cluster = c.cluster.as_str();
        let mut buckets: BTreeMap<i64, RollupBucket> = BTreeMap::new();
        let mut sealed_until = self.window_start(lo);
        for &d in &c.days {
            let r = self
                .db
                .exec(ROLLUPS, (cluster, c.fp, d, lo.saturating_sub(w), hi))
                .await?;
            for (start, data) in result_rows::<(i64, Vec<u8>)>(ROLLUPS, r)? {
                sealed_until = sealed_until.max(start.saturating_add(w));
                let decoded = chunk::decode_rollups(&data).map_err(|e| {
                    Error::Corrupt(format!("rollups of series {} at {start}: {e}", c.fp))
                })?;
                for b in decoded {
                    buckets.entry(b.start_ms).or_insert(b);
                }
            }
        }
        if sealed_until <= hi {
            let rest = TimeRange {
                start_ms: sealed_until,
                end_ms: self.window_start(hi).saturating_add(w - 1),
            };
            let raw = self.read_series(c, rest, now).await?;
            for b in rollup::rollup_5m_windowed(&raw, w) {
                buckets.entry(b.start_ms).or_insert(b);
            }
        }
        Ok(rollup::synthesize_range(
            buckets.into_values(),
            range,
            field,
            w,
        ))
    }

    pub async fn select(&self, q: &SelectQuery) -> Result<Vec<TimeSeries>> {
        let now = kube_insight_core::time::now_ms();
        let cands: Vec<Candidate> = self
            .candidates(&q.matchers, q.range, now)
            .await?
            .into_iter()
            .filter(|c| c.first <= q.range.end_ms)
            .collect();
        if cands.len() > q.max_series.saturating_mul(4).max(q.max_series + 16) {
            return Err(Error::LimitExceeded {
                what: "series",
                limit: q.max_series,
            });
        }
        let data: Vec<Vec<(i64, f64)>> = all(cands
            .iter()
            .map(|c| async move {
                match q.resolution {
                    Resolution::Raw => self.read_series(c, q.range, now).await,
                    Resolution::Rollup5m(f) => self.read_series_rollup(c, q.range, now, f).await,
                }
            })
            .collect::<Vec<_>>())
        .await?;
        let mut out = Vec::new();
        let mut samples = 0usize;
        for (c, d) in cands.into_iter().zip(data) {
            if d.is_empty() {
                continue;
            }
            samples += d.len();
            if samples > q.max_samples {
                return Err(Error::LimitExceeded {
                    what: "samples",
                    limit: q.max_samples,
                });
            }
            out.push(TimeSeries::new(
                c.labels,
                d.into_iter().map(|(t, v)| Sample::new(t, v)).collect(),
            ));
            if out.len() > q.max_series {
                return Err(Error::LimitExceeded {
                    what: "series",
                    limit: q.max_series,
                });
            }
        }
        Ok(out)
    }

    /// Label sets of matching series with data overlapping the range.
    async fn listed(
        &self,
        matchers: &[Matcher],
        range: TimeRange,
        limit: usize,
    ) -> Result<Vec<Labels>> {
        let now = kube_insight_core::time::now_ms();
        let cands = self.candidates(matchers, range, now).await?;
        // The index's last_ms may lag by one step: check those by data.
        let slack = INDEX_LAST_STEP_MS + 60_000;
        let mut sure = Vec::new();
        let mut unsure = Vec::new();
        for c in cands {
            if c.first > range.end_ms || c.last.saturating_add(slack) < range.start_ms {
                continue;
            }
            if c.last >= range.start_ms {
                sure.push(c);
            } else {
                unsure.push(c);
            }
        }
        let checks: Vec<bool> = all(unsure
            .iter()
            .map(|c| async move {
                let r = TimeRange::new(range.start_ms, range.end_ms)?;
                Ok::<_, Error>(!self.read_series(c, r, now).await?.is_empty())
            })
            .collect::<Vec<_>>())
        .await?;
        let mut out: Vec<Labels> = sure.into_iter().map(|c| c.labels).collect();
        out.extend(
            unsure
                .into_iter()
                .zip(checks)
                .filter(|(_, ok)| *ok)
                .map(|(c, _)| c.labels),
        );
        out.sort();
        if out.len() > limit {
            return Err(Error::LimitExceeded {
                what: "series",
                limit,
            });
        }
        Ok(out)
    }

    pub async fn series(&self, q: &SeriesQuery) -> Result<Vec<Labels>> {
        self.listed(&q.matchers, q.range, q.limit).await
    }

    pub async fn label_names(&self, q: &SeriesQuery) -> Result<Vec<String>> {
        let series = self.listed(&q.matchers, q.range, MAX_INDEX_ROWS).await?;
        let names: BTreeSet<String> = series
            .iter()
            .flat_map(|l| l.iter().map(|l| l.name.clone()))
            .collect();
        if names.len() > q.limit {
            return Err(Error::LimitExceeded {
                what: "label names",
                limit: q.limit,
            });
        }
        Ok(names.into_iter().collect())
    }

    pub async fn label_values(&self, name: &str, q: &SeriesQuery) -> Result<Vec<String>> {
        let series = self.listed(&q.matchers, q.range, MAX_INDEX_ROWS).await?;
        let values: BTreeSet<String> = series
            .iter()
            .filter_map(|l| l.get(name))
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .collect();
        if values.len() > q.limit {
            return Err(Error::LimitExceeded {
                what: "label values",
                limit: q.limit,
            });
        }
        Ok(values.into_iter().collect())
    }

    pub async fn entities(&self, q: &EntityQuery) -> Result<Vec<Entity>> {
        let now = kube_insight_core::time::now_ms();
        let mut matchers = Vec::new();
        if let Some(c) = &q.cluster {
            matchers.push(Matcher::eq("cluster", c.as_str()));
        }
        if let Some(ns) = &q.namespace {
            matchers.push(Matcher::eq("namespace", ns.as_str()));
        }
        // Owner facts count whatever their time: read them over retention.
        let mut cands = self.candidates(&matchers, q.range, now).await?;
        let everything = TimeRange::new(i64::MIN, i64::MAX)?;
        let mut seen: HashSet<(String, i64)> =
            cands.iter().map(|c| (c.cluster.clone(), c.fp)).collect();
        for owner in ["kube_pod_owner", "kube_replicaset_owner", "kube_job_owner"] {
            let mut m = matchers.clone();
            m.push(Matcher::eq("__name__", owner));
            for c in self.candidates(&m, everything, now).await? {
                if seen.insert((c.cluster.clone(), c.fp)) {
                    cands.push(c);
                }
            }
        }
        let rows = cands.iter().map(|c| {
            let l = |n: &str| c.labels.get(n).unwrap_or("");
            EntitySeries {
                cluster: &c.cluster,
                name: l("__name__"),
                namespace: l("namespace"),
                pod: l("pod"),
                container: l("container"),
                owner_kind: l("owner_kind"),
                owner_name: l("owner_name"),
                owner_is_controller: l("owner_is_controller") == "true",
                replicaset: l("replicaset"),
                job_name: l("job_name"),
                first_ms: c.first,
                last_ms: c.last,
            }
        });
        entity_tree::build(rows, q)
    }

    // -----------------------------------------------------------------
    // Maintenance

    pub async fn maintain(&self, now: i64) -> Result<MaintenanceReport> {
        self.now_floor.fetch_max(now, Ordering::Relaxed);
        let mut report = MaintenanceReport::default();
        let retention = self.opts.retention.metrics.as_millis() as i64;
        self.horizon.fetch_max(now - retention, Ordering::Relaxed);
        self.flush_index(false).await?;
        let horizon = self.horizon(now);
        let days: Vec<i32> = (day(horizon)..=day(now)).collect();
        let clusters = self.clusters(&[], &days).await?;
        const PENDING: &str =
            "SELECT window_start, shard, fp FROM metrics_pending WHERE cluster = ? AND day = ?";
        const UNMARK: &str = "DELETE FROM metrics_pending USING TIMESTAMP ? WHERE cluster = ? AND day = ? AND window_start = ? AND shard = ? AND fp = ?";
        for cluster in &clusters {
            for &d in &days {
                let pending: Vec<(i64, i32, i64)> = self
                    .db
                    .rows(
                        PENDING,
                        (cluster.as_str(), d),
                        10_000_000,
                        "pending windows",
                    )
                    .await?;
                for (w, sh, fp) in pending {
                    if w + self.window_ms() + self.grace_ms() + COMPACT_MARGIN_MS > now {
                        continue;
                    }
                    let started = super::session::maintenance_delete_time_us();
                    let (chunks, samples) = if fp == HEAD {
                        self.compact_head(cluster, w, sh, now).await?
                    } else {
                        self.compact_late(cluster, fp, w, now, started).await?
                    };
                    report.chunks_written += chunks;
                    report.samples_compacted += samples;
                    self.db
                        .write(UNMARK, (started, cluster.as_str(), d, w, sh, fp))
                        .await?;
                }
            }
        }
        report.rows_expired += self.expire(now).await?;
        self.evict(now);
        Ok(report)
    }

    /// Head rows of one (window, shard) into chunks.
    async fn compact_head(&self, cluster: &str, w: i64, sh: i32, now: i64) -> Result<(u64, u64)> {
        const Q: &str =
            "SELECT fp, ts, value FROM metrics_head WHERE cluster = ? AND shard = ? AND bucket = ?";
        let mut by_fp: BTreeMap<i64, BTreeMap<i64, f64>> = BTreeMap::new();
        for b in (w..w + self.window_ms()).step_by(HEAD_BUCKET_MS as usize) {
            let rows: Vec<(i64, i64, i64)> = self
                .db
                .rows(Q, (cluster, sh, b), 50_000_000, "head rows")
                .await?;
            for (fp, t, v) in rows {
                by_fp.entry(fp).or_default().entry(t).or_insert(value(v));
            }
        }
        let mut chunks = 0;
        let mut samples = 0;
        for (fp, s) in by_fp {
            let added = self.merge_into_chunk(cluster, fp, w, s, now).await?;
            if added > 0 {
                chunks += 1;
                samples += added;
            }
        }
        Ok((chunks, samples))
    }

    /// Late rows of one (series, window) into its chunk, then deletes them
    /// (rows written after `started` survive the delete).
    async fn compact_late(
        &self,
        cluster: &str,
        fp: i64,
        w: i64,
        now: i64,
        started: i64,
    ) -> Result<(u64, u64)> {
        const Q: &str = "SELECT ts, value FROM metrics_late WHERE cluster = ? AND fp = ? AND day = ? AND window_start = ?";
        const DEL: &str = "DELETE FROM metrics_late USING TIMESTAMP ? WHERE cluster = ? AND fp = ? AND day = ? AND window_start = ?";
        let r = self.db.exec(Q, (cluster, fp, day(w), w)).await?;
        let s: BTreeMap<i64, f64> = result_rows::<(i64, i64)>(Q, r)?
            .into_iter()
            .map(|(t, v)| (t, value(v)))
            .collect();
        let added = self.merge_into_chunk(cluster, fp, w, s, now).await?;
        self.db
            .write(DEL, (started, cluster, fp, day(w), w))
            .await?;
        Ok((u64::from(added > 0), added))
    }

    /// Adds samples to the chunk of (series, window); the stored value of a
    /// timestamp wins. Returns how many samples were new.
    async fn merge_into_chunk(
        &self,
        cluster: &str,
        fp: i64,
        w: i64,
        new: BTreeMap<i64, f64>,
        now: i64,
    ) -> Result<u64> {
        const CHUNK_W: &str = "INSERT INTO metrics_chunks (cluster, fp, day, window_start, data, min_ts, max_ts, samples) VALUES (?, ?, ?, ?, ?, ?, ?, ?) USING TTL ?";
        const ROLLUP_W: &str = "INSERT INTO metrics_rollups (cluster, fp, day, window_start, data) VALUES (?, ?, ?, ?, ?) USING TTL ?";
        if new.is_empty() {
            return Ok(0);
        }
        let mut all: BTreeMap<i64, f64> = self
            .read_chunk(cluster, fp, w)
            .await?
            .unwrap_or_default()
            .into_iter()
            .collect();
        let before = all.len();
        for (t, v) in new {
            all.entry(t).or_insert(v);
        }
        let added = (all.len() - before) as u64;
        if added == 0 {
            return Ok(0);
        }
        let end = w + self.window_ms();
        let Some(ttl) = self.ttl_secs(end, now) else {
            return Ok(0);
        };
        let samples: Vec<(i64, f64)> = all.into_iter().collect();
        let (min_ts, max_ts) = (samples[0].0, samples[samples.len() - 1].0);
        let data = chunk::encode(samples.iter().copied()).map_err(|e| {
            Error::Corrupt(format!("encoding the chunk of series {fp} at {w}: {e}"))
        })?;
        let rollups = chunk::encode_rollups(&chunk::rollup_5m(&samples));
        let rollup_ttl = (self
            .opts
            .retention
            .metrics
            .max(self.opts.retention.topology)
            .as_secs())
        .min(super::schema::max_ttl_secs() as u64) as i32;
        self.db
            .write(
                CHUNK_W,
                (
                    cluster,
                    fp,
                    day(w),
                    w,
                    data,
                    min_ts,
                    max_ts,
                    samples.len() as i32,
                    ttl,
                ),
            )
            .await?;
        self.db
            .write(ROLLUP_W, (cluster, fp, day(w), w, rollups, rollup_ttl))
            .await?;
        Ok(added)
    }

    /// Retention: deletes the index and chunk partitions of days wholly
    /// before the horizon (TTLs expire them too; this makes an injected
    /// `now` and a shortened retention take effect at once).
    async fn expire(&self, now: i64) -> Result<u64> {
        const NAMES: &str = "SELECT metric FROM metrics_names WHERE cluster = ? AND day = ?";
        const FPS: &str =
            "SELECT fp FROM metrics_series WHERE cluster = ? AND day = ? AND metric = ?";
        const DEL_CHUNKS: &str =
            "DELETE FROM metrics_chunks USING TIMESTAMP ? WHERE cluster = ? AND fp = ? AND day = ?";
        const DEL_LATE: &str =
            "DELETE FROM metrics_late USING TIMESTAMP ? WHERE cluster = ? AND fp = ? AND day = ?";
        const DEL_SERIES: &str = "DELETE FROM metrics_series USING TIMESTAMP ? WHERE cluster = ? AND day = ? AND metric = ?";
        const DEL_NAMES: &str =
            "DELETE FROM metrics_names USING TIMESTAMP ? WHERE cluster = ? AND day = ?";
        const DEL_PENDING: &str =
            "DELETE FROM metrics_pending USING TIMESTAMP ? WHERE cluster = ? AND day = ?";
        let first_kept = day(self.horizon(now)) as i64;
        let done = self.expired_before_day.load(Ordering::Relaxed);
        let from = if done == i64::MIN {
            first_kept - 3
        } else {
            done
        };
        let mut expired = 0u64;
        for d in from..first_kept {
            let d = d as i32;
            let clusters = self.clusters(&[], &[d]).await?;
            for cluster in &clusters {
                let names: Vec<(String,)> = self
                    .db
                    .rows(NAMES, (cluster.as_str(), d), 1_000_000, "metric names")
                    .await?;
                for (metric,) in names {
                    let fps: Vec<(i64,)> = self
                        .db
                        .rows(
                            FPS,
                            (cluster.as_str(), d, metric.as_str()),
                            MAX_INDEX_ROWS,
                            "series",
                        )
                        .await?;
                    expired += fps.len() as u64;
                    all(fps
                        .into_iter()
                        .map(|(fp,)| async move {
                            self.db
                                .write(DEL_CHUNKS, (DELETE_TS_US, cluster.as_str(), fp, d))
                                .await?;
                            self.db
                                .write(DEL_LATE, (DELETE_TS_US, cluster.as_str(), fp, d))
                                .await
                        })
                        .collect::<Vec<_>>())
                    .await?;
                    self.db
                        .write(
                            DEL_SERIES,
                            (DELETE_TS_US, cluster.as_str(), d, metric.as_str()),
                        )
                        .await?;
                }
                self.db
                    .write(DEL_NAMES, (DELETE_TS_US, cluster.as_str(), d))
                    .await?;
                self.db
                    .write(DEL_PENDING, (DELETE_TS_US, cluster.as_str(), d))
                    .await?;
            }
        }
        self.expired_before_day
            .fetch_max(first_kept, Ordering::Relaxed);
        Ok(expired)
    }

    /// Writes the newest `last_ms` of every series whose index lags (all of
    /// them at `flush`, those a step behind otherwise).
    pub async fn flush_index(&self, everything: bool) -> Result<()> {
        let now = kube_insight_core::time::now_ms();
        let writes: Vec<IndexWrite> = {
            let mut c = self.cache();
            let mut w = Vec::new();
            for (&fp, st) in c.series.iter_mut() {
                let dirty: Vec<(i32, i64)> = st.index_dirty.iter().map(|(&d, &t)| (d, t)).collect();
                for (d, t) in dirty {
                    let last = st.indexed.get(&d).map_or(i64::MIN, |x| x.1);
                    if everything || t > last.saturating_add(INDEX_LAST_STEP_MS) {
                        w.push(IndexWrite::last(st, fp, d, t));
                        st.index_dirty.remove(&d);
                        if let Some(x) = st.indexed.get_mut(&d) {
                            x.1 = x.1.max(t);
                        }
                    }
                }
            }
            w
        };
        all(writes
            .iter()
            .map(|w| w.run(&self.db, self.ttl_secs(w.ts(), now).unwrap_or(60)))
            .collect::<Vec<_>>())
        .await?;
        Ok(())
    }

    /// Forgets what a writer no longer needs: old buckets' timestamps and
    /// series idle for longer than the head lives.
    fn evict(&self, now: i64) {
        let keep_from = bucket(now - 2 * HEAD_BUCKET_MS);
        let idle = now - self.head_ttl_ms();
        let marked_from = now - self.window_ms() - self.grace_ms() - COMPACT_MARGIN_MS;
        let mut c = self.cache();
        let c = &mut *c;
        let mut gone = Vec::new();
        for (&fp, st) in c.series.iter_mut() {
            if st.last_write_ms < idle && st.index_dirty.is_empty() {
                gone.push(fp);
                continue;
            }
            st.seen = st.seen.split_off(&keep_from);
            st.complete_from = st.complete_from.max(keep_from);
            let old_days: Vec<i32> = st
                .indexed
                .keys()
                .copied()
                .filter(|&d| d < day(now) - 1 && !st.index_dirty.contains_key(&d))
                .collect();
            for d in old_days {
                st.indexed.remove(&d);
            }
        }
        for fp in gone {
            if let Some(st) = c.series.remove(&fp) {
                if let Some(n) = c.active.get_mut(&st.cluster) {
                    *n = n.saturating_sub(1);
                }
            }
        }
        c.marked.retain(|m| m.1 >= marked_from);
        let today = day(now);
        c.names.retain(|n| n.1 >= today - 1);
        c.clusters.retain(|n| n.0 >= today - 1);
    }

    /// Series per cluster written within the head grace (the ones the
    /// series cap counts).
    pub fn live_series(&self) -> Vec<(String, u64)> {
        let since = self.now_ms().saturating_sub(self.grace_ms());
        let c = self.cache();
        let mut by: HashMap<Arc<str>, u64> = HashMap::new();
        for st in c.series.values().filter(|st| st.last_write_ms >= since) {
            *by.entry(st.cluster.clone()).or_insert(0) += 1;
        }
        let mut v: Vec<(String, u64)> = by.into_iter().map(|(k, n)| (k.to_string(), n)).collect();
        v.sort();
        v
    }

    pub fn active_series(&self) -> Vec<(String, u64)> {
        let c = self.cache();
        let mut v: Vec<(String, u64)> = c
            .active
            .iter()
            .filter(|(_, &n)| n > 0)
            .map(|(k, &n)| (k.to_string(), n))
            .collect();
        v.sort();
        v
    }
}

/// Series of `cluster` this writer wrote at or after `since` (a scan).
fn live_in(series: &HashMap<i64, SeriesState>, cluster: &str, since: i64) -> u64 {
    series
        .values()
        .filter(|st| &*st.cluster == cluster && st.last_write_ms >= since)
        .count() as u64
}

/// A series as the index knows it.
struct Candidate {
    cluster: String,
    fp: i64,
    labels: Labels,
    first: i64,
    last: i64,
    days: Vec<i32>,
}

/// One index write: the whole row, or only its first or last cell.
struct IndexWrite {
    cluster: Arc<str>,
    metric: Arc<str>,
    labels: Option<Arc<[u8]>>,
    fp: i64,
    day: i32,
    first: Option<i64>,
    last: Option<i64>,
}

impl IndexWrite {
    fn full(st: &SeriesState, fp: i64, day: i32, first: i64, last: i64) -> IndexWrite {
        IndexWrite {
            cluster: st.cluster.clone(),
            metric: st.metric.clone(),
            labels: Some(st.labels.clone()),
            fp,
            day,
            first: Some(first),
            last: Some(last),
        }
    }

    fn first(st: &SeriesState, fp: i64, day: i32, first: i64) -> IndexWrite {
        IndexWrite {
            first: Some(first),
            last: None,
            labels: None,
            ..IndexWrite::full(st, fp, day, 0, 0)
        }
    }

    fn last(st: &SeriesState, fp: i64, day: i32, last: i64) -> IndexWrite {
        IndexWrite {
            first: None,
            last: Some(last),
            labels: None,
            ..IndexWrite::full(st, fp, day, 0, 0)
        }
    }

    fn ts(&self) -> i64 {
        self.last.or(self.first).unwrap_or(0)
    }

    /// `first_ms` is written at `FIRST_WINS_BASE - first` and `last_ms` at
    /// `last` (µs): Cassandra keeps the cell with the newest write time,
    /// so the smallest first and the largest last win, whoever writes.
    async fn run(&self, db: &Db, ttl: i32) -> Result<()> {
        const LABELS: &str = "UPDATE metrics_series USING TTL ? SET labels = ? WHERE cluster = ? AND day = ? AND metric = ? AND fp = ?";
        const FIRST: &str = "UPDATE metrics_series USING TTL ? AND TIMESTAMP ? SET first_ms = ? WHERE cluster = ? AND day = ? AND metric = ? AND fp = ?";
        const LAST: &str = "UPDATE metrics_series USING TTL ? AND TIMESTAMP ? SET last_ms = ? WHERE cluster = ? AND day = ? AND metric = ? AND fp = ?";
        let key = (&*self.cluster, self.day, &*self.metric, self.fp);
        if let Some(l) = &self.labels {
            db.write(LABELS, (ttl, l.to_vec(), key.0, key.1, key.2, key.3))
                .await?;
        }
        if let Some(f) = self.first {
            let at = FIRST_WINS_BASE_US - f.clamp(0, FIRST_WINS_BASE_US / 1000) * 1000;
            db.write(FIRST, (ttl, at, f, key.0, key.1, key.2, key.3))
                .await?;
        }
        if let Some(l) = self.last {
            let at = l.clamp(0, FIRST_WINS_BASE_US / 1000) * 1000;
            db.write(LAST, (ttl, at, l, key.0, key.1, key.2, key.3))
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_arithmetic() {
        assert_eq!(day(0), 0);
        assert_eq!(day(DAY_MS - 1), 0);
        assert_eq!(day(DAY_MS), 1);
        assert_eq!(day(-1), -1);
        assert_eq!(bucket(HEAD_BUCKET_MS + 5), HEAD_BUCKET_MS);
        assert_eq!(bucket(-1), -HEAD_BUCKET_MS);
        for fp in [0i64, 1, -1, i64::MIN, i64::MAX, 31, 32, 33] {
            let s = shard(fp);
            assert!((0..HEAD_SHARDS as i32).contains(&s), "{fp} → {s}");
        }
        assert_eq!(shard(33), 1);
        // A day holds a whole number of buckets and of 2 h windows.
        assert_eq!(DAY_MS % HEAD_BUCKET_MS, 0);
        assert_eq!(DAY_MS % (2 * 3_600_000), 0);
    }

    #[test]
    fn series_ids_differ_by_cluster_and_labels() {
        let l = Labels::from_pairs([("__name__", "up"), ("job", "a")]);
        let m = Labels::from_pairs([("__name__", "up"), ("job", "b")]);
        assert_ne!(series_fp("a", &l), series_fp("b", &l));
        assert_ne!(series_fp("a", &l), series_fp("a", &m));
        assert_eq!(series_fp("a", &l), series_fp("a", &l.clone()));
    }

    #[test]
    fn values_round_trip_bit_for_bit() {
        for v in [
            0.0,
            -0.0,
            f64::NAN,
            f64::from_bits(0x7ff0_0000_0000_0002),
            kube_insight_core::STALE_NAN,
            f64::INFINITY,
            f64::MIN_POSITIVE,
        ] {
            assert_eq!(value(bits(v)).to_bits(), v.to_bits());
        }
    }

    #[test]
    fn index_write_times_order_first_and_last() {
        // The smaller first must get the later write time.
        let at = |f: i64| FIRST_WINS_BASE_US - f * 1000;
        assert!(at(1_000) > at(2_000));
        // Every write time stays below the retention delete's.
        const { assert!(FIRST_WINS_BASE_US < DELETE_TS_US) };
        const {
            assert!(
                4_102_444_800_000i64 * 1000 < FIRST_WINS_BASE_US,
                "year 2100 fits"
            )
        };
    }
}
