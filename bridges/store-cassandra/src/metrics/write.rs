//! The write path of the metrics: admission of new series (the series
//! cap), dedup against what is stored, classification of each sample into a
//! head or a late row, the series index, and the write plan
//! ([`super::plan`]) that turns all of it into CQL requests.
//!
//! The steps that need no IO are methods of the writer's [`Cache`] and free
//! functions, so the tests below run a whole remote-write request through
//! them without a server and count the plan's requests.

use super::plan::{self, Bound, IndexKey, Request};
use super::{
    all, bits, bucket, day, live_in, series_fp, shard, Cache, Metrics, SeriesState, Windows,
    FIRST_WINS_BASE_US, HEAD, HEAD_BUCKET_MS, INDEX_LAST_STEP_MS,
};
use crate::session::result_rows;
use kube_insight_core::Labels;
use kube_insight_store::codec::encode_labels;
use kube_insight_store::error::{Error, Result};
use kube_insight_store::metrics::{MetricBatch, WriteOutcome};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// A prepared series of a write.
pub(super) struct Prep {
    fp: i64,
    labels: Labels,
    cluster: String,
    samples: Vec<(i64, f64)>,
}

/// One sample to write.
pub(super) struct Row {
    fp: i64,
    ts: i64,
    v: f64,
}

/// A marker: (cluster, window start, shard, fp or [`HEAD`]).
type Marker = (Arc<str>, i64, i32, i64);
/// A name or cluster row: (cluster, day, metric, is the name row).
type Extra = (Arc<str>, i32, Arc<str>, bool);

/// What one write stores, before it becomes requests.
#[derive(Default)]
pub(super) struct Planned {
    rows: Vec<Row>,
    index: Vec<IndexWrite>,
    markers: Vec<Marker>,
    extras: Vec<Extra>,
    /// Samples this write reserved: (fp, ts).
    mine: HashSet<(i64, i64)>,
    /// Duplicates of samples another write is storing right now.
    waits: Vec<Row>,
}

/// Sorts and dedups each series' samples and drops those before `oldest`.
pub(super) fn prepare(batch: MetricBatch, oldest: i64, out: &mut WriteOutcome) -> Vec<Prep> {
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
    preps
}

impl Cache {
    /// Takes the series of a write this writer does not know into the
    /// cache; `found` holds the `last_ms` the index had for those another
    /// writer created. New series beyond the cap are refused: their fps are
    /// returned and counted in `out`.
    pub(super) fn admit(
        &mut self,
        preps: &[Prep],
        found: &HashMap<i64, i64>,
        now: i64,
        win: Windows,
        max_series: u64,
        out: &mut WriteOutcome,
    ) -> HashSet<i64> {
        let mut rejected: HashSet<i64> = HashSet::new();
        let since = now.saturating_sub(win.grace_ms);
        for p in preps {
            if self.series.contains_key(&p.fp) || rejected.contains(&p.fp) {
                continue;
            }
            let known = found.get(&p.fp).copied();
            let cluster = self.intern(&p.cluster);
            let active = self.active.get(&cluster).copied().unwrap_or(0);
            let series = &self.series;
            if known.is_none()
                && !self.cap_gate.admit(&cluster, active, max_series, now, || {
                    live_in(series, &cluster, since)
                })
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
            let metric = self.intern(p.labels.get("__name__").unwrap_or(""));
            *self.active.entry(cluster.clone()).or_insert(0) += 1;
            self.series.insert(
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
        for p in preps.iter().filter(|p| rejected.contains(&p.fp)) {
            out.series_rejected_limit += 1;
            out.samples_rejected_limit += p.samples.len() as u64;
        }
        rejected
    }

    /// (fp, cluster, head bucket) whose stored timestamps are not in memory.
    fn missing(&self, preps: &[Prep]) -> Vec<(i64, String, i64)> {
        let mut m = BTreeSet::new();
        for p in preps {
            let Some(st) = self.series.get(&p.fp) else {
                continue;
            };
            for &(ts, _) in &p.samples {
                if !st.loaded(bucket(ts)) {
                    m.insert((p.fp, p.cluster.clone(), bucket(ts)));
                }
            }
        }
        m.into_iter().collect()
    }

    /// Decides, for every sample of a write whose buckets are all in
    /// memory, whether it is new (a row to write, reserved as pending), a
    /// duplicate, or a duplicate of a sample another write is storing (a
    /// wait); and which index, marker, name and cluster rows go with it.
    fn classify(
        &mut self,
        preps: &[Prep],
        now: i64,
        win: Windows,
        acc: &mut Planned,
        out: &mut WriteOutcome,
    ) {
        for p in preps {
            let Some(st) = self.series.get_mut(&p.fp) else {
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
                        // sure it lands before answering.
                        if st.pending.contains(&ts) && !acc.mine.contains(&(p.fp, ts)) {
                            acc.waits.push(Row { fp: p.fp, ts, v });
                        }
                        continue;
                    }
                    Err(i) => seen.insert(i, ts),
                }
                out.samples_written += 1;
                acc.mine.insert((p.fp, ts));
                st.pending.push(ts);
                acc.rows.push(Row { fp: p.fp, ts, v });
                let d = days.entry(day(ts)).or_insert((ts, ts));
                d.0 = d.0.min(ts);
                d.1 = d.1.max(ts);
                let w = win.start(ts);
                let sh = shard(p.fp);
                if win.closed(ts, now) {
                    acc.markers.push((st.cluster.clone(), w, sh, p.fp));
                } else if self.marked.insert((st.cluster.clone(), w, sh)) {
                    acc.markers.push((st.cluster.clone(), w, sh, HEAD));
                }
            }
            for (d, (lo, hi)) in days {
                match st.indexed.get(&d).copied() {
                    None => {
                        acc.index.push(IndexWrite::full(st, p.fp, d, lo, hi));
                        st.indexed.insert(d, (lo, hi));
                        if self
                            .names
                            .insert((st.cluster.clone(), d, st.metric.clone()))
                        {
                            acc.extras
                                .push((st.cluster.clone(), d, st.metric.clone(), true));
                        }
                        if self.clusters.insert((d, st.cluster.clone())) {
                            acc.extras
                                .push((st.cluster.clone(), d, st.metric.clone(), false));
                        }
                    }
                    Some((first, last)) => {
                        if lo < first {
                            acc.index.push(IndexWrite::first(st, p.fp, d, lo));
                        }
                        if hi > last + INDEX_LAST_STEP_MS {
                            acc.index.push(IndexWrite::last(st, p.fp, d, hi));
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
    }

    /// Settles a write's reservations: on failure nothing of it counts as
    /// stored, so a retry writes it again.
    fn settle(
        &mut self,
        rows: &[Row],
        index: &[IndexWrite],
        markers: &[Marker],
        extras: &[Extra],
        ok: bool,
    ) {
        for r in rows {
            if let Some(st) = self.series.get_mut(&r.fp) {
                if let Some(i) = st.pending.iter().position(|&t| t == r.ts) {
                    st.pending.swap_remove(i);
                }
                if !ok {
                    if let Some(v) = st.seen.get_mut(&bucket(r.ts)) {
                        if let Ok(i) = v.binary_search(&r.ts) {
                            v.remove(i);
                        }
                    }
                }
            }
        }
        if ok {
            return;
        }
        for m in markers {
            if m.3 == HEAD {
                self.marked.remove(&(m.0.clone(), m.1, m.2));
            }
        }
        for w in index {
            if let Some(st) = self.series.get_mut(&w.key.fp) {
                st.indexed.remove(&w.key.day);
            }
        }
        for e in extras {
            if e.3 {
                self.names.remove(&(e.0.clone(), e.1, e.2.clone()));
            } else {
                self.clusters.remove(&(e.1, e.0.clone()));
            }
        }
    }

    fn cluster_of(&self, rows: &[Row]) -> HashMap<i64, Arc<str>> {
        rows.iter()
            .filter_map(|r| self.series.get(&r.fp).map(|s| (r.fp, s.cluster.clone())))
            .collect()
    }
}

/// The requests that store rows, index entries, markers and name/cluster
/// rows: head rows batched per (cluster, shard, bucket), late rows per
/// (cluster, series, day), index rows per (cluster, day, metric), each
/// under the batch size bound.
fn build_plan(
    rows: &[Row],
    cluster_of: &HashMap<i64, Arc<str>>,
    index: &[IndexWrite],
    markers: &[Marker],
    extras: &[Extra],
    win: Windows,
    now: i64,
) -> Vec<Request> {
    let mut bound: Vec<Bound> = Vec::with_capacity(rows.len() + index.len() + markers.len());
    for r in rows {
        let Some(cluster) = cluster_of.get(&r.fp) else {
            continue;
        };
        if win.closed(r.ts, now) {
            let Some(ttl) = win.ttl_secs(r.ts, now) else {
                continue;
            };
            let w = win.start(r.ts);
            bound.push(Bound::Late {
                cluster: cluster.clone(),
                fp: r.fp,
                day: day(w),
                window_start: w,
                ts: r.ts,
                value: bits(r.v),
                ttl,
            });
        } else {
            bound.push(Bound::Head {
                cluster: cluster.clone(),
                shard: shard(r.fp),
                bucket: bucket(r.ts),
                fp: r.fp,
                ts: r.ts,
                value: bits(r.v),
            });
        }
    }
    for (cluster, w, sh, fp) in markers {
        bound.push(Bound::Mark {
            cluster: cluster.clone(),
            day: day(*w),
            window_start: *w,
            shard: *sh,
            fp: *fp,
        });
    }
    for w in index {
        w.bounds(win.ttl_secs(w.ts(), now).unwrap_or(60), &mut bound);
    }
    for (cluster, d, metric, is_name) in extras {
        bound.push(if *is_name {
            Bound::Name {
                cluster: cluster.clone(),
                day: *d,
                metric: metric.clone(),
            }
        } else {
            Bound::Cluster {
                day: *d,
                cluster: cluster.clone(),
            }
        });
    }
    plan::requests(bound)
}

impl Metrics {
    pub async fn write(&self, batch: MetricBatch) -> Result<WriteOutcome> {
        let now = self.now_ms();
        let win = self.windows();
        let mut out = WriteOutcome::default();
        let mut preps = prepare(batch, self.horizon(now), &mut out);
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
        let rejected = self.cache().admit(
            &preps,
            &found,
            now,
            win,
            self.opts.max_series_per_cluster as u64,
            &mut out,
        );
        preps.retain(|p| !rejected.contains(&p.fp));
        // 2. Buckets whose stored timestamps are not in memory: load them.
        let mut acc = Planned::default();
        for _attempt in 0..4 {
            let missing = self.cache().missing(&preps);
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
            // 3. Classify under the lock: every bucket is in memory
            // (unless another write evicted one meanwhile: load again).
            let mut c = self.cache();
            if !c.missing(&preps).is_empty() {
                continue;
            }
            c.classify(&preps, now, win, &mut acc, &mut out);
            break;
        }
        let Planned {
            rows,
            index,
            markers,
            extras,
            waits,
            ..
        } = acc;
        let result = self.persist(&rows, &index, &markers, &extras, now).await;
        self.cache()
            .settle(&rows, &index, &markers, &extras, result.is_ok());
        result?;
        self.settle_in_flight(waits, now).await?;
        Ok(out)
    }

    /// Duplicates of samples another write of this process was storing:
    /// waits for that write; if it failed (the sample is no longer
    /// reserved), stores the sample here, so an `Ok` always means stored.
    async fn settle_in_flight(&self, mut waits: Vec<Row>, now: i64) -> Result<()> {
        let win = self.windows();
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
                        let (w, sh) = (win.start(r.ts), shard(r.fp));
                        if win.closed(r.ts, now) {
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
                self.cache().settle(&lost, &[], &marks, &[], result.is_ok());
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

    /// Writes rows, index entries and markers; `Ok` means all are durable.
    async fn persist(
        &self,
        rows: &[Row],
        index: &[IndexWrite],
        markers: &[Marker],
        extras: &[Extra],
        now: i64,
    ) -> Result<()> {
        let cluster_of = self.cache().cluster_of(rows);
        let plan = build_plan(
            rows,
            &cluster_of,
            index,
            markers,
            extras,
            self.windows(),
            now,
        );
        self.send(&plan).await
    }

    /// Sends a plan's requests, at most [`super::READ_FANOUT`] at a time.
    async fn send(&self, plan: &[Request]) -> Result<()> {
        all(plan
            .iter()
            .map(|r| self.db.send(&r.rows))
            .collect::<Vec<_>>())
        .await?;
        Ok(())
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
        let plan = build_plan(&[], &HashMap::new(), &writes, &[], &[], self.windows(), now);
        self.send(&plan).await
    }
}

/// One index write: the whole row, or only its first or last cell.
struct IndexWrite {
    key: IndexKey,
    labels: Option<Arc<[u8]>>,
    first: Option<i64>,
    last: Option<i64>,
}

impl IndexWrite {
    fn full(st: &SeriesState, fp: i64, day: i32, first: i64, last: i64) -> IndexWrite {
        IndexWrite {
            key: IndexKey {
                cluster: st.cluster.clone(),
                day,
                metric: st.metric.clone(),
                fp,
            },
            labels: Some(st.labels.clone()),
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

    /// The statements of this write. `first_ms` is written at
    /// `FIRST_WINS_BASE - first` and `last_ms` (with the labels of a new
    /// row) at `last` (µs): Cassandra keeps the cell with the newest write
    /// time, so the smallest first and the largest last win, whoever
    /// writes.
    fn bounds(&self, ttl: i32, out: &mut Vec<Bound>) {
        let last_at = |l: i64| l.clamp(0, FIRST_WINS_BASE_US / 1000) * 1000;
        if let Some(f) = self.first {
            out.push(Bound::IndexFirst {
                key: self.key.clone(),
                ttl,
                at_us: FIRST_WINS_BASE_US - f.clamp(0, FIRST_WINS_BASE_US / 1000) * 1000,
                first: f,
            });
        }
        match (&self.labels, self.last) {
            (Some(labels), Some(l)) => out.push(Bound::IndexNew {
                key: self.key.clone(),
                ttl,
                at_us: last_at(l),
                labels: labels.clone(),
                last: l,
            }),
            (None, Some(l)) => out.push(Bound::IndexLast {
                key: self.key.clone(),
                ttl,
                at_us: last_at(l),
                last: l,
            }),
            // Only `full` sets labels, and always with a last.
            (_, None) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    //! The recording layer: a remote-write request through admission,
    //! classification and the plan, without a server; the plan's requests
    //! are counted as the session would send them.

    use super::*;
    use crate::session::MAX_BATCH_BYTES;
    use kube_insight_core::{Sample, TimeSeries};
    use plan::PlanStats;

    const MIN: i64 = 60_000;

    fn win() -> Windows {
        Windows {
            window_ms: 120 * MIN,
            grace_ms: 30 * MIN,
            retention_ms: 30 * 1440 * MIN,
        }
    }

    /// The labels of the Cassandra bench: one metric, 50 namespaces.
    fn labels(i: usize) -> Labels {
        Labels::from_pairs([
            ("__name__", "container_cpu_usage_seconds_total".to_string()),
            ("cluster", "bench".to_string()),
            ("namespace", format!("ns-{}", i % 50)),
            ("pod", format!("pod-{}", i / 3)),
            ("container", format!("c-{}", i % 3)),
            ("job", "kubelet".to_string()),
            ("instance", format!("10.0.{}.{}:10250", i % 200, i % 250)),
        ])
    }

    fn request(series: std::ops::Range<usize>, ts: i64) -> MetricBatch {
        MetricBatch {
            cluster: "prod-eu-west-1".into(),
            series: series
                .map(|i| TimeSeries::new(labels(i), vec![Sample::new(ts, i as f64)]))
                .collect(),
        }
    }

    /// One request through the pure steps of [`Metrics::write`], with an
    /// empty keyspace (no index row found, nothing stored before); the
    /// reservations are settled as after a successful write.
    fn plan_of(c: &mut Cache, batch: MetricBatch, now: i64) -> (Vec<Request>, WriteOutcome) {
        let mut out = WriteOutcome::default();
        let preps = prepare(batch, now - win().retention_ms, &mut out);
        let rejected = c.admit(&preps, &HashMap::new(), now, win(), 1_000_000, &mut out);
        assert!(rejected.is_empty());
        assert!(c.missing(&preps).is_empty(), "new series need no load");
        let mut acc = Planned::default();
        c.classify(&preps, now, win(), &mut acc, &mut out);
        let plan = build_plan(
            &acc.rows,
            &c.cluster_of(&acc.rows),
            &acc.index,
            &acc.markers,
            &acc.extras,
            win(),
            now,
        );
        c.settle(&acc.rows, &acc.index, &acc.markers, &acc.extras, true);
        (plan, out)
    }

    fn stats(plan: &[Request]) -> PlanStats {
        let mut s = PlanStats::default();
        s.record(plan);
        s
    }

    /// 2026-12-07 10:00 UTC: a whole bucket from a day's start.
    const T0: i64 = 1_796_637_600_000;

    #[test]
    fn a_2000_series_request_of_known_series_is_at_most_32_head_batches() {
        let mut c = Cache::default();
        let (first, out) = plan_of(&mut c, request(0..2000, T0), T0 + 1_000);
        assert_eq!(out.series_created, 2000);
        let s = stats(&first);
        assert_eq!(s.samples, 2000);
        assert_eq!(s.max_partitions_per_request, 1);
        assert!(s.max_batch_size <= MAX_BATCH_BYTES, "{s:?}");
        assert!(s.sample_requests <= 32, "{s:?}");
        // Next scrape: every series known and indexed.
        let (next, out) = plan_of(&mut c, request(0..2000, T0 + 15_000), T0 + 16_000);
        assert_eq!(out.samples_written, 2000);
        let s = stats(&next);
        eprintln!("known series: {s:?}");
        assert_eq!(s.requests, s.sample_requests, "only head batches: {s:?}");
        assert!(s.requests <= 32, "{s:?}");
        assert!(s.samples_per_request() >= 50.0, "{s:?}");
        assert_eq!(s.max_partitions_per_request, 1);
        assert!(s.max_batch_size < 5 * 1024, "{s:?}");
    }

    #[test]
    fn new_series_are_indexed_in_batches_of_their_index_partition() {
        let mut c = Cache::default();
        let (plan, _) = plan_of(&mut c, request(0..2000, T0), T0 + 1_000);
        let s = stats(&plan);
        eprintln!("new series: {s:?}");
        let index: Vec<&Request> = plan
            .iter()
            .filter(|r| matches!(r.rows[0], Bound::IndexNew { .. } | Bound::IndexFirst { .. }))
            .collect();
        // Two statements a series (labels with last_ms, first_ms), in one
        // partition: (cluster, day, metric), packed up to the bound.
        assert_eq!(index.iter().map(|r| r.rows.len()).sum::<usize>(), 4000);
        let size: usize = index.iter().map(|r| r.batch_size()).sum();
        // Greedy packing: every request but a partition's last is over 90 % full.
        assert!(
            index.len() <= size.div_ceil(MAX_BATCH_BYTES * 9 / 10) + 1,
            "{}",
            index.len()
        );
        // Markers: one per (window, shard), in one pending partition.
        let marks: usize = plan
            .iter()
            .filter(|r| matches!(r.rows[0], Bound::Mark { .. }))
            .count();
        assert_eq!(marks, 1);
        assert!(s.requests < 150, "{s:?}");
    }

    #[test]
    fn the_bench_workload_stores_at_least_50_samples_per_request() {
        // The cassandra bench: 20,000 series, 20 scrapes 15 s apart, in
        // requests of 2,000 series (one process, an empty keyspace).
        let mut c = Cache::default();
        let mut all = PlanStats::default();
        for step in 0..20i64 {
            for from in (0..20_000).step_by(2_000) {
                let ts = T0 + step * 15_000;
                let (plan, _) = plan_of(&mut c, request(from..from + 2_000, ts), ts + 1_000);
                all.record(&plan);
            }
        }
        eprintln!(
            "bench workload: {all:?}, {:.1} samples per request",
            all.samples_per_request()
        );
        assert_eq!(all.samples, 400_000);
        assert!(all.samples_per_request() >= 50.0, "{all:?}");
    }

    #[test]
    fn the_index_moves_last_every_step_and_first_only_backwards() {
        let mut c = Cache::default();
        plan_of(&mut c, request(0..10, T0), T0 + 1_000);
        let count = |plan: &[Request], f: fn(&Bound) -> bool| {
            plan.iter().flat_map(|r| &r.rows).filter(|b| f(b)).count()
        };
        // Within the step: nothing for the index.
        let (p, _) = plan_of(&mut c, request(0..10, T0 + 60_000), T0 + 61_000);
        assert_eq!(count(&p, |b| matches!(b, Bound::IndexLast { .. })), 0);
        // A step on: last_ms of every series.
        let (p, _) = plan_of(&mut c, request(0..10, T0 + 7 * MIN), T0 + 7 * MIN + 1_000);
        assert_eq!(count(&p, |b| matches!(b, Bound::IndexLast { .. })), 10);
        // An older sample: first_ms only.
        let (p, _) = plan_of(&mut c, request(0..10, T0 - MIN), T0 + 7 * MIN + 2_000);
        assert_eq!(count(&p, |b| matches!(b, Bound::IndexFirst { .. })), 10);
        assert_eq!(count(&p, |b| matches!(b, Bound::IndexLast { .. })), 0);
    }
}
