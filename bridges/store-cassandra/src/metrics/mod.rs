//! Metrics in Cassandra.
//!
//! # Tables (see `schema.rs` and ARCHITECTURE.md)
//! - `metrics_head ((cluster, shard, bucket), fp, ts)`: one row per sample
//!   of an open 2 h window, 10-minute buckets, 32 shards by series, short
//!   TTL. A push becomes one unlogged same-partition batch per (shard,
//!   bucket), so a 2,000-series remote-write request of known series is at
//!   most 32 CQL writes (asserted without a server by `write.rs`' tests,
//!   through the write plan of [`plan`]).
//! - `metrics_late ((cluster, fp, day), window_start, ts)`: samples that
//!   arrive after their window closed; merged into the chunk at the next
//!   maintenance.
//! - `metrics_chunks ((cluster, fp, day), window_start)`: immutable
//!   Gorilla chunks of closed windows ([`kube_insight_store::chunk`]); `metrics_rollups`
//!   their 5-minute summaries.
//! - `metrics_series ((cluster, day, metric), fp)`: the series index, one
//!   row per series and day with its labels and first/last sample; the
//!   first/last cells are written with `USING TIMESTAMP` derived from the
//!   value, so concurrent writers converge on min/max without reading. The
//!   writer's seen-series cache rate-limits it: a row once per series and
//!   day, `last_ms` again only after it moved 5 minutes; new rows are
//!   batched per index partition (two statements a series).
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

mod plan;
mod write;

use crate::session::{result_rows, Db};
use futures::stream::{self, StreamExt, TryStreamExt};
use kube_insight_core::rollup::{self, RollupBucket};
use kube_insight_core::{Entity, Labels, MatchOp, Matcher, Sample, TimeRange, TimeSeries};
use kube_insight_store::chunk;
use kube_insight_store::codec::decode_labels;
use kube_insight_store::entity_tree::{self, EntitySeries};
use kube_insight_store::error::{Error, Result};
use kube_insight_store::metrics::{EntityQuery, Resolution, RollupField, SelectQuery, SeriesQuery};
use kube_insight_store::series_cap::CapGate;
use kube_insight_store::{MaintenanceReport, StoreOptions};
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

/// The time arithmetic of the write path, from the store options.
#[derive(Debug, Clone, Copy)]
struct Windows {
    window_ms: i64,
    grace_ms: i64,
    retention_ms: i64,
}

impl Windows {
    fn start(&self, ts: i64) -> i64 {
        ts.div_euclid(self.window_ms) * self.window_ms
    }

    /// Is the window of `ts` closed for head writes at `now`?
    fn closed(&self, ts: i64, now: i64) -> bool {
        self.start(ts) + self.window_ms + self.grace_ms <= now
    }

    /// The TTL of a row at `ts` written at `now`; `None` when already
    /// past retention.
    fn ttl_secs(&self, ts: i64, now: i64) -> Option<i32> {
        let left = (ts + self.retention_ms - now) / 1000;
        (left > 0).then(|| left.min(i64::from(super::schema::max_ttl_secs())) as i32)
    }
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

    fn windows(&self) -> Windows {
        Windows {
            window_ms: self.window_ms(),
            grace_ms: self.grace_ms(),
            retention_ms: self.opts.retention.metrics.as_millis() as i64,
        }
    }

    fn window_start(&self, ts: i64) -> i64 {
        self.windows().start(ts)
    }

    fn grace_ms(&self) -> i64 {
        self.opts.head_grace.as_millis() as i64
    }

    fn head_ttl_ms(&self) -> i64 {
        super::schema::head_ttl(&self.opts).as_millis() as i64
    }

    /// The oldest timestamp kept.
    pub fn horizon(&self, now: i64) -> i64 {
        let retention = self.opts.retention.metrics.as_millis() as i64;
        (now - retention).max(self.horizon.load(Ordering::Relaxed))
    }

    fn ttl_secs(&self, ts: i64, now: i64) -> Option<i32> {
        self.windows().ttl_secs(ts, now)
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
    ) -> Result<Vec<kube_insight_store::metrics::ClusterSeen>> {
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
            .map(|cluster| kube_insight_store::metrics::ClusterSeen {
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
