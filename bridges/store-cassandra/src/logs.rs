//! Logs in Cassandra ([`CassandraLogStore`]).
//!
//! # Tables (see `schema.rs`)
//! - `log_blocks ((cluster, namespace, hour, slot), stream, block_id)`: one
//!   compressed block ([`kube_insight_store::log_block`], the codec SQLite uses) per
//!   stream and hour of each batch (`slot`: 16 per namespace-hour, by
//!   stream, so a busy namespace does not make one huge partition). `block_id` is derived from the batch's
//!   content hash, so a retried batch overwrites its own rows. Closed hours
//!   are merged by maintenance into one block per stream (`merged_from`
//!   names the blocks it replaces, which readers then skip until they are
//!   deleted).
//! - `log_streams ((cluster, day), namespace, stream)`: the streams of a
//!   day with their pod, container and workload; queries resolve streams
//!   here, never by scanning lines.
//! - `log_batches ((cluster, hash))`: content hashes of stored batches (6 h
//!   TTL), checked before a write, so a retry is answered as duplicates.
//! - `log_pending ((cluster, day), hour, namespace, slot)`: partitions to merge.
//!
//! A batch becomes visible per (stream, hour) block: a batch whose write
//! failed midway may be partly visible until its retry, which stores it
//! once (Fluent Bit retries on 503).

use super::metrics::DAY_MS;
use super::session::{result_rows, Db};
use async_trait::async_trait;
use futures::stream::{self, StreamExt, TryStreamExt};
use kube_insight_core::log::{LogRecord, LogStreamKey};
use kube_insight_store::error::{Error, Result};
use kube_insight_store::log_block::{
    self, decode_block, encode_block, has_levels, level_mask, Block, Candidate, ReadStream, RecView,
};
use kube_insight_store::logs::{
    stream_hash, LogBatch, LogMaintenance, LogPage, LogQuery, LogRatePoint, LogRateQuery,
    LogSelector, LogStore, LogWriteOutcome,
};
use kube_insight_store::StoreOptions;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

const HOUR_NS: i64 = 3_600 * 1_000_000_000;
const HOURS_PER_DAY: i64 = 24;
/// A closed hour is merged this long after its end (late records).
const MERGE_GRACE_NS: i64 = 15 * 60 * 1_000_000_000;
const FANOUT: usize = 32;
/// Block reads in flight ahead of a page or rate query (one round trip per
/// this many blocks of a `contains` scan, not per block).
const PREFETCH: usize = 16;
/// Streams one query may cover.
const MAX_QUERY_STREAMS: usize = 20_000;
/// Candidate blocks one query may consider.
const MAX_QUERY_BLOCKS: usize = 200_000;
/// Write time of retention deletes: above every cell written.
const DELETE_TS_US: i64 = 1 << 62;
/// Partitions per namespace and hour.
const SLOTS: i32 = 16;
/// A stream's hour is merged only when its blocks hold at most this many
/// (compressed) bytes: the merged block is one cell of one mutation, and
/// Cassandra refuses a mutation over `max_mutation_size` (half the 32 MiB
/// commit log segment by default: `Rejected an oversized mutation`),
/// which would fail every maintenance pass.
const MAX_MERGED_BYTES: usize = 8 << 20;

/// The slot of a stream.
fn slot(stream: i64) -> i32 {
    (stream as u64 % SLOTS as u64) as i32
}

/// The block id of a merged block (one per stream and hour).
const MERGED: i64 = i64::MAX;

fn hour_of(ts_ns: i64) -> i64 {
    ts_ns.div_euclid(HOUR_NS)
}

fn day_of_hour(hour: i64) -> i32 {
    hour.div_euclid(HOURS_PER_DAY) as i32
}

/// The id of a batch's block of one stream and hour: a retry of the same
/// batch gets the same ids and overwrites its rows.
fn block_id(batch_hash: u128, stream: u64, hour: i64) -> i64 {
    let mut buf = [0u8; 32];
    buf[..16].copy_from_slice(&batch_hash.to_le_bytes());
    buf[16..24].copy_from_slice(&stream.to_le_bytes());
    buf[24..].copy_from_slice(&hour.to_le_bytes());
    let id = xxhash_rust::xxh3::xxh3_64(&buf) as i64;
    if id == MERGED {
        MERGED - 1
    } else {
        id
    }
}

fn now_us() -> i64 {
    kube_insight_core::time::now_ms().saturating_mul(1000)
}

#[derive(Default)]
struct Cache {
    /// (cluster, day, stream) → workload written.
    streams: HashMap<(String, i32, u64), String>,
    pending: HashSet<(String, i64, String, i32)>,
    clusters: HashSet<(i32, String)>,
}

/// The logs signal of the cassandra store.
pub struct CassandraLogStore {
    db: Arc<Db>,
    opts: StoreOptions,
    cache: Mutex<Cache>,
    /// Retention horizon (ns) set by maintenance.
    horizon_ns: AtomicI64,
    /// Hours before this were deleted by retention.
    expired_before_hour: AtomicI64,
    zstd_level: i32,
}

/// The key of a candidate block.
#[derive(Clone)]
struct BlockKey {
    cluster: String,
    namespace: String,
    hour: i64,
    stream: i64,
    block_id: i64,
}

impl CassandraLogStore {
    pub fn new(db: Arc<Db>, opts: StoreOptions) -> CassandraLogStore {
        CassandraLogStore {
            db,
            opts,
            cache: Mutex::new(Cache::default()),
            horizon_ns: AtomicI64::new(i64::MIN),
            expired_before_hour: AtomicI64::new(i64::MIN),
            zstd_level: 3,
        }
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The oldest record time kept (ns).
    fn horizon_ns(&self, now_ms: i64) -> i64 {
        let retention = self.opts.retention.logs.as_millis() as i64;
        (now_ms - retention)
            .saturating_mul(1_000_000)
            .max(self.horizon_ns.load(Ordering::Relaxed))
    }

    fn ttl_secs(&self, ts_ns: i64, now_ms: i64) -> i32 {
        let retention = self.opts.retention.logs.as_millis() as i64;
        let left = (ts_ns.div_euclid(1_000_000) + retention - now_ms) / 1000;
        left.clamp(60, i64::from(super::schema::max_ttl_secs())) as i32
    }

    // -----------------------------------------------------------------
    // Writes

    async fn write(&self, mut batch: LogBatch) -> Result<LogWriteOutcome> {
        const SEEN: &str = "SELECT at FROM log_batches WHERE cluster = ? AND hash = ?";
        const BATCH_W: &str = "INSERT INTO log_batches (cluster, hash, at) VALUES (?, ?, ?)";
        let mut out = LogWriteOutcome::default();
        if batch.record_count() == 0 {
            return Ok(out);
        }
        let now = kube_insight_core::time::now_ms();
        let hash = batch.content_hash();
        let hash_text = format!("{hash:032x}");
        let cluster = batch.cluster.clone();
        let oldest = self.horizon_ns(now);
        for s in &mut batch.streams {
            s.key.cluster = cluster.clone();
            let before = s.records.len();
            s.records.retain(|r| r.timestamp_ns >= oldest);
            out.records_too_old += (before - s.records.len()) as u64;
        }
        let kept: u64 = batch.streams.iter().map(|s| s.records.len() as u64).sum();
        if kept == 0 {
            return Ok(out);
        }
        let r = self
            .db
            .exec(SEEN, (cluster.as_str(), hash_text.as_str()))
            .await?;
        if !result_rows::<(Option<i64>,)>(SEEN, r)?.is_empty() {
            out.records_duplicate = kept;
            return Ok(out);
        }
        let seq = now_us();
        let mut blocks = Vec::new();
        let mut stream_rows = Vec::new();
        let mut pending = Vec::new();
        let mut clusters = Vec::new();
        let mut unknown = Vec::new();
        {
            let mut c = self.cache();
            for s in batch.streams.iter().filter(|s| !s.records.is_empty()) {
                let h = stream_hash(&s.key);
                let workload = s.meta.workload.as_ref().map_or("", |w| w.name.as_str());
                let mut by_hour: BTreeMap<i64, Vec<&LogRecord>> = BTreeMap::new();
                for r in &s.records {
                    by_hour.entry(hour_of(r.timestamp_ns)).or_default().push(r);
                }
                let mut days = BTreeSet::new();
                for (hour, mut recs) in by_hour {
                    recs.sort_by_key(|r| r.timestamp_ns);
                    days.insert(day_of_hour(hour));
                    let views: Vec<RecView<'_>> = recs.iter().map(|r| RecView::of(r)).collect();
                    let mut z = zstd::bulk::Compressor::new(self.zstd_level).ok();
                    let (data, st) = encode_block(&views, z.as_mut());
                    blocks.push((
                        cluster.clone(),
                        s.key.namespace.clone(),
                        hour,
                        slot(h as i64),
                        h as i64,
                        block_id(hash, h, hour),
                        seq,
                        st.min_ns,
                        st.max_ns,
                        st.count as i32,
                        st.raw_bytes.min(i32::MAX as usize) as i32,
                        st.levels_blob(),
                        data,
                        self.ttl_secs(st.max_ns, now),
                    ));
                    let sl = slot(h as i64);
                    if c.pending
                        .insert((cluster.clone(), hour, s.key.namespace.clone(), sl))
                    {
                        pending.push((
                            cluster.clone(),
                            day_of_hour(hour),
                            hour,
                            s.key.namespace.clone(),
                            sl,
                        ));
                    }
                }
                for d in days {
                    let k = (cluster.clone(), d, h);
                    match c.streams.get(&k) {
                        Some(w) if w == workload => {}
                        known => {
                            if known.is_none() {
                                unknown.push((d, s.key.namespace.clone(), h));
                            }
                            c.streams.insert(k, workload.to_string());
                            stream_rows.push((
                                cluster.clone(),
                                d,
                                s.key.namespace.clone(),
                                h as i64,
                                s.key.pod.clone(),
                                s.key.container.clone(),
                                workload.to_string(),
                            ));
                        }
                    }
                    if c.clusters.insert((d, cluster.clone())) {
                        clusters.push((d, cluster.clone()));
                    }
                }
            }
        }
        out.streams_created = self.count_new_streams(&cluster, &unknown).await? as u64;
        let result = self
            .persist(
                blocks,
                stream_rows.clone(),
                pending.clone(),
                clusters.clone(),
                now,
            )
            .await;
        if let Err(e) = result {
            let mut c = self.cache();
            for (cl, d, _, h, ..) in &stream_rows {
                c.streams.remove(&(cl.clone(), *d, *h as u64));
            }
            for (cl, _, hour, ns, sl) in &pending {
                c.pending.remove(&(cl.clone(), *hour, ns.clone(), *sl));
            }
            for k in &clusters {
                c.clusters.remove(k);
            }
            return Err(e);
        }
        // Last: the batch is stored, a retry is now a duplicate.
        self.db
            .write(BATCH_W, (cluster.as_str(), hash_text.as_str(), now))
            .await?;
        out.records_written = kept;
        Ok(out)
    }

    /// How many of these (day, namespace, stream) were not stored before.
    async fn count_new_streams(
        &self,
        cluster: &str,
        unknown: &[(i32, String, u64)],
    ) -> Result<usize> {
        const Q: &str = "SELECT pod FROM log_streams WHERE cluster = ? AND day = ? AND namespace = ? AND stream = ?";
        let mut seen_streams = HashSet::new();
        let found: Vec<(u64, bool)> = stream::iter(
            unknown
                .iter()
                .map(|(d, ns, h)| async move {
                    let r = self
                        .db
                        .exec(Q, (cluster, *d, ns.as_str(), *h as i64))
                        .await?;
                    Ok::<_, Error>((*h, !result_rows::<(Option<String>,)>(Q, r)?.is_empty()))
                })
                .collect::<Vec<_>>(),
        )
        .buffered(FANOUT)
        .try_collect()
        .await?;
        let mut new = 0;
        let existed: HashSet<u64> = found.iter().filter(|f| f.1).map(|f| f.0).collect();
        for (h, _) in found {
            if !existed.contains(&h) && seen_streams.insert(h) {
                new += 1;
            }
        }
        Ok(new)
    }

    #[allow(clippy::type_complexity)]
    async fn persist(
        &self,
        blocks: Vec<(
            String,
            String,
            i64,
            i32,
            i64,
            i64,
            i64,
            i64,
            i64,
            i32,
            i32,
            Vec<u8>,
            Vec<u8>,
            i32,
        )>,
        streams: Vec<(String, i32, String, i64, String, String, String)>,
        pending: Vec<(String, i32, i64, String, i32)>,
        clusters: Vec<(i32, String)>,
        now: i64,
    ) -> Result<()> {
        const BLOCK_W: &str = "INSERT INTO log_blocks (cluster, namespace, hour, slot, stream, block_id, first_seq, min_ns, max_ns, lines, raw_bytes, levels, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TTL ?";
        const STREAM_W: &str = "INSERT INTO log_streams (cluster, day, namespace, stream, pod, container, workload) VALUES (?, ?, ?, ?, ?, ?, ?) USING TTL ?";
        const PENDING_W: &str = "INSERT INTO log_pending (cluster, day, hour, namespace, slot) VALUES (?, ?, ?, ?, ?) USING TTL ?";
        const CLUSTER_W: &str = "INSERT INTO clusters (day, cluster) VALUES (?, ?)";
        let ttl_day = |d: i32| self.ttl_secs((d as i64 + 1) * DAY_MS * 1_000_000, now);
        let mut jobs: Vec<futures::future::BoxFuture<'_, Result<()>>> = Vec::new();
        for b in blocks {
            jobs.push(Box::pin(self.db.write(BLOCK_W, b)));
        }
        for s in streams {
            let ttl = ttl_day(s.1);
            jobs.push(Box::pin(
                self.db
                    .write(STREAM_W, (s.0, s.1, s.2, s.3, s.4, s.5, s.6, ttl)),
            ));
        }
        for p in pending {
            let ttl = ttl_day(p.1);
            jobs.push(Box::pin(
                self.db.write(PENDING_W, (p.0, p.1, p.2, p.3, p.4, ttl)),
            ));
        }
        for c in clusters {
            jobs.push(Box::pin(self.db.write(CLUSTER_W, c)));
        }
        stream::iter(jobs)
            .buffer_unordered(FANOUT)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    // -----------------------------------------------------------------
    // Reads

    /// The streams a selector covers in the days of `[lo, hi]` (ns).
    async fn streams(
        &self,
        sel: &LogSelector,
        lo: i64,
        hi: i64,
    ) -> Result<Vec<(ReadStream, String)>> {
        const CLUSTERS: &str = "SELECT cluster FROM clusters WHERE day = ?";
        const ALL: &str = "SELECT namespace, stream, pod, container, workload FROM log_streams WHERE cluster = ? AND day = ?";
        const NS: &str = "SELECT namespace, stream, pod, container, workload FROM log_streams WHERE cluster = ? AND day = ? AND namespace = ?";
        let now = kube_insight_core::time::now_ms();
        let lo = lo.max(self.horizon_ns(now));
        let hi = hi.min((now + DAY_MS).saturating_mul(1_000_000));
        if lo > hi {
            return Ok(Vec::new());
        }
        let days: Vec<i32> = (day_of_hour(hour_of(lo))..=day_of_hour(hour_of(hi))).collect();
        let clusters: Vec<String> = match &sel.cluster {
            Some(c) => vec![c.clone()],
            None => {
                let mut set = BTreeSet::new();
                for &d in &days {
                    let rows: Vec<(String,)> =
                        self.db.rows(CLUSTERS, (d,), 100_000, "clusters").await?;
                    set.extend(rows.into_iter().map(|r| r.0));
                }
                set.into_iter().collect()
            }
        };
        type Row = (String, i64, Option<String>, Option<String>, Option<String>);
        let mut parts = Vec::new();
        for c in &clusters {
            for &d in &days {
                parts.push((c.clone(), d));
            }
        }
        let fetched: Vec<(String, Vec<Row>)> = stream::iter(
            parts
                .into_iter()
                .map(|(c, d)| async move {
                    let rows: Vec<Row> = match &sel.namespace {
                        Some(ns) => {
                            self.db
                                .rows(
                                    NS,
                                    (c.as_str(), d, ns.as_str()),
                                    MAX_QUERY_STREAMS + 1,
                                    "log streams",
                                )
                                .await?
                        }
                        None => {
                            self.db
                                .rows(ALL, (c.as_str(), d), MAX_QUERY_STREAMS + 1, "log streams")
                                .await?
                        }
                    };
                    Ok::<_, Error>((c, rows))
                })
                .collect::<Vec<_>>(),
        )
        .buffered(FANOUT)
        .try_collect()
        .await?;
        let mut out: BTreeMap<u64, (ReadStream, String)> = BTreeMap::new();
        for (cluster, rows) in fetched {
            for (ns, h, pod, container, workload) in rows {
                let pod = pod.unwrap_or_default();
                let container = container.unwrap_or_default();
                let workload = workload.unwrap_or_default();
                let ok = sel.pod.as_ref().is_none_or(|p| *p == pod)
                    && sel.container.as_ref().is_none_or(|c| *c == container)
                    && sel.workload.as_ref().is_none_or(|w| *w == workload);
                if !ok {
                    continue;
                }
                let hash = h as u64;
                // The latest day's workload wins.
                out.insert(
                    hash,
                    (
                        ReadStream {
                            hash,
                            key: LogStreamKey::new(&cluster, &ns, &pod, &container),
                            workload: (!workload.is_empty()).then_some(workload),
                        },
                        ns,
                    ),
                );
                if out.len() > MAX_QUERY_STREAMS {
                    return Err(Error::LimitExceeded {
                        what: "log streams",
                        limit: MAX_QUERY_STREAMS,
                    });
                }
            }
        }
        Ok(out.into_values().collect())
    }

    /// Blocks of `streams` overlapping `[lo, hi]` with a level the mask
    /// keeps, minus blocks a merged block already holds.
    async fn candidates(
        &self,
        streams: &[(ReadStream, String)],
        lo: i64,
        hi: i64,
        mask: &[bool; log_block::LEVEL_SLOTS],
    ) -> Result<Vec<Candidate<BlockKey>>> {
        const Q: &str = "SELECT stream, block_id, first_seq, min_ns, max_ns, raw_bytes, levels, merged_from FROM log_blocks WHERE cluster = ? AND namespace = ? AND hour = ? AND slot = ?";
        const ONE: &str = "SELECT stream, block_id, first_seq, min_ns, max_ns, raw_bytes, levels, merged_from FROM log_blocks WHERE cluster = ? AND namespace = ? AND hour = ? AND slot = ? AND stream = ?";
        let now = kube_insight_core::time::now_ms();
        let lo = lo.max(self.horizon_ns(now));
        if lo > hi || streams.is_empty() {
            return Ok(Vec::new());
        }
        let (h_lo, h_hi) = (
            hour_of(lo),
            hour_of(hi.min((now + DAY_MS).saturating_mul(1_000_000))),
        );
        // Streams by (cluster, namespace); a few are read one by one.
        let mut groups: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
        for (i, (s, ns)) in streams.iter().enumerate() {
            groups
                .entry((s.key.cluster.clone(), ns.clone()))
                .or_default()
                .push(i);
        }
        let index: HashMap<u64, usize> = streams
            .iter()
            .enumerate()
            .map(|(i, s)| (s.0.hash, i))
            .collect();
        type Row = (i64, i64, i64, i64, i64, i32, Vec<u8>, Option<Vec<u8>>);
        let mut reads: Vec<(String, String, i64, i32, Option<i64>)> = Vec::new();
        for ((cluster, ns), members) in &groups {
            let slots: BTreeSet<i32> = members
                .iter()
                .map(|&m| slot(streams[m].0.hash as i64))
                .collect();
            for hour in h_lo..=h_hi {
                if members.len() <= 4 {
                    for &m in members {
                        let h = streams[m].0.hash as i64;
                        reads.push((cluster.clone(), ns.clone(), hour, slot(h), Some(h)));
                    }
                } else {
                    for &sl in &slots {
                        reads.push((cluster.clone(), ns.clone(), hour, sl, None));
                    }
                }
            }
        }
        if reads.len() > MAX_QUERY_BLOCKS {
            return Err(Error::LimitExceeded {
                what: "log partitions",
                limit: MAX_QUERY_BLOCKS,
            });
        }
        let fetched: Vec<(String, String, i64, Vec<Row>)> = stream::iter(
            reads
                .into_iter()
                .map(|(cluster, ns, hour, sl, one)| async move {
                    let rows: Vec<Row> = match one {
                        Some(s) => {
                            self.db
                                .rows(
                                    ONE,
                                    (cluster.as_str(), ns.as_str(), hour, sl, s),
                                    MAX_QUERY_BLOCKS,
                                    "log blocks",
                                )
                                .await?
                        }
                        None => {
                            self.db
                                .rows(
                                    Q,
                                    (cluster.as_str(), ns.as_str(), hour, sl),
                                    MAX_QUERY_BLOCKS,
                                    "log blocks",
                                )
                                .await?
                        }
                    };
                    Ok::<_, Error>((cluster, ns, hour, rows))
                })
                .collect::<Vec<_>>(),
        )
        .buffered(FANOUT)
        .try_collect()
        .await?;
        let mut out = Vec::new();
        for (cluster, ns, hour, rows) in fetched {
            let replaced: HashSet<(i64, i64)> = rows
                .iter()
                .filter_map(|r| r.7.as_ref().map(|m| (r.0, m)))
                .flat_map(|(s, m)| merged_ids(m).into_iter().map(move |id| (s, id)))
                .collect();
            for (s, id, first_seq, min_ns, max_ns, raw, levels, _) in rows {
                let Some(&si) = index.get(&(s as u64)) else {
                    continue;
                };
                if replaced.contains(&(s, id))
                    || max_ns < lo
                    || min_ns > hi
                    || !has_levels(&levels, mask)
                {
                    continue;
                }
                out.push(Candidate {
                    id: BlockKey {
                        cluster: cluster.clone(),
                        namespace: ns.clone(),
                        hour,
                        stream: s,
                        block_id: id,
                    },
                    stream: si,
                    first_seq,
                    max_ns,
                    raw_bytes: raw.max(0) as usize,
                });
                if out.len() > MAX_QUERY_BLOCKS {
                    return Err(Error::LimitExceeded {
                        what: "log blocks",
                        limit: MAX_QUERY_BLOCKS,
                    });
                }
            }
        }
        Ok(out)
    }

    async fn load(&self, k: BlockKey, with_text: bool) -> Result<Block> {
        const Q: &str = "SELECT data FROM log_blocks WHERE cluster = ? AND namespace = ? AND hour = ? AND slot = ? AND stream = ? AND block_id = ?";
        let r = self
            .db
            .exec(
                Q,
                (
                    k.cluster.as_str(),
                    k.namespace.as_str(),
                    k.hour,
                    slot(k.stream),
                    k.stream,
                    k.block_id,
                ),
            )
            .await?;
        let rows: Vec<(Vec<u8>,)> = result_rows(Q, r)?;
        let Some((data,)) = rows.into_iter().next() else {
            // Merged and deleted since the candidates were read.
            return Ok(Block::default());
        };
        decode_block(&data, with_text).map_err(|e| {
            Error::Corrupt(format!(
                "log block {}/{}/{}/{}: {e}",
                k.cluster, k.namespace, k.hour, k.block_id
            ))
        })
    }

    async fn page(&self, q: &LogQuery) -> Result<LogPage> {
        let Some((lo, hi)) = log_block::page_bounds(q) else {
            return Ok(LogPage::default());
        };
        let mut q = q.clone();
        let now = kube_insight_core::time::now_ms();
        let horizon_ms = self.horizon_ns(now).div_euclid(1_000_000) + 1;
        if q.range.start_ms < horizon_ms {
            match kube_insight_core::TimeRange::new(horizon_ms, q.range.end_ms) {
                Ok(r) => q.range = r,
                Err(_) => return Ok(LogPage::default()),
            }
        }
        let streams = self.streams(&q.selector, lo, hi).await?;
        let cands = self
            .candidates(&streams, lo, hi, &level_mask(&q.levels))
            .await?;
        let read: Vec<ReadStream> = streams.into_iter().map(|s| s.0).collect();
        log_block::page(&read, cands, &q, PREFETCH, |c, text| {
            self.load(c.id.clone(), text)
        })
        .await
    }

    async fn rate(&self, q: &LogRateQuery) -> Result<Vec<LogRatePoint>> {
        log_block::check_rate(q)?;
        let (lo, hi) = log_block::ns_bounds(&q.range);
        let streams = self.streams(&q.selector, lo, hi).await?;
        let cands = self
            .candidates(&streams, lo, hi, &level_mask(&q.levels))
            .await?;
        let mut q = q.clone();
        let now = kube_insight_core::time::now_ms();
        let horizon_ms = self.horizon_ns(now).div_euclid(1_000_000) + 1;
        if q.range.start_ms < horizon_ms {
            match kube_insight_core::TimeRange::new(horizon_ms, q.range.end_ms) {
                Ok(r) => q.range = r,
                Err(_) => return Ok(Vec::new()),
            }
        }
        log_block::rate(cands, &q, PREFETCH, |c, text| self.load(c.id.clone(), text)).await
    }

    // -----------------------------------------------------------------
    // Maintenance

    async fn maintain(&self, now: i64) -> Result<LogMaintenance> {
        const PENDING: &str =
            "SELECT hour, namespace, slot FROM log_pending WHERE cluster = ? AND day = ?";
        const CLUSTERS: &str = "SELECT cluster FROM clusters WHERE day = ?";
        const DONE: &str = "DELETE FROM log_pending USING TIMESTAMP ? WHERE cluster = ? AND day = ? AND hour = ? AND namespace = ? AND slot = ?";
        let retention = self.opts.retention.logs.as_millis() as i64;
        self.horizon_ns.fetch_max(
            (now - retention).saturating_mul(1_000_000),
            Ordering::Relaxed,
        );
        let mut m = LogMaintenance::default();
        let now_ns = now.saturating_mul(1_000_000);
        let horizon = self.horizon_ns(now);
        let days: Vec<i32> =
            (day_of_hour(hour_of(horizon))..=day_of_hour(hour_of(now_ns))).collect();
        let mut clusters = BTreeSet::new();
        for &d in &days {
            let rows: Vec<(String,)> = self.db.rows(CLUSTERS, (d,), 100_000, "clusters").await?;
            clusters.extend(rows.into_iter().map(|r| r.0));
        }
        for cluster in &clusters {
            for &d in &days {
                let rows: Vec<(i64, String, i32)> = self
                    .db
                    .rows(
                        PENDING,
                        (cluster.as_str(), d),
                        1_000_000,
                        "log hours to merge",
                    )
                    .await?;
                for (hour, ns, sl) in rows {
                    if (hour + 1) * HOUR_NS + MERGE_GRACE_NS > now_ns {
                        continue;
                    }
                    let started = super::session::maintenance_delete_time_us();
                    m.blocks_merged += self
                        .merge_hour(cluster, &ns, hour, sl, now, started)
                        .await?;
                    self.db
                        .write(DONE, (started, cluster.as_str(), d, hour, ns.as_str(), sl))
                        .await?;
                }
            }
        }
        m.rows_expired += self.expire(now).await?;
        let mut c = self.cache();
        let today = (now / DAY_MS) as i32;
        c.streams.retain(|k, _| k.1 >= today - 1);
        c.clusters.retain(|k| k.0 >= today - 1);
        c.pending.retain(|k| k.1 >= hour_of(now_ns) - 2);
        Ok(m)
    }

    /// Merges each stream's blocks of a closed hour into one block, then
    /// deletes the blocks it replaces with one range tombstone per stream,
    /// at the newest write time among them: a busy stream's thousands of
    /// blocks an hour would otherwise leave as many row tombstones for
    /// every later read of the partition to step over (Cassandra warns at
    /// 1,000 and fails a read at 100,000). The tombstone is no later than
    /// `started` ([`super::session::maintenance_delete_time_us`], which allows for
    /// other writers' clock skew): a block written after the read survives
    /// to be merged next time. A read block newer than that survives too;
    /// the merged block lists it, so readers skip it until its TTL.
    #[allow(clippy::too_many_arguments)]
    async fn merge_hour(
        &self,
        cluster: &str,
        ns: &str,
        hour: i64,
        sl: i32,
        now: i64,
        started: i64,
    ) -> Result<u64> {
        const Q: &str = "SELECT stream, block_id, first_seq, data, merged_from, WRITETIME(data) FROM log_blocks WHERE cluster = ? AND namespace = ? AND hour = ? AND slot = ?";
        const MERGED_W: &str = "INSERT INTO log_blocks (cluster, namespace, hour, slot, stream, block_id, first_seq, min_ns, max_ns, lines, raw_bytes, levels, data, merged_from) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TTL ?";
        const DEL: &str = "DELETE FROM log_blocks USING TIMESTAMP ? WHERE cluster = ? AND namespace = ? AND hour = ? AND slot = ? AND stream = ? AND block_id < ?";
        let rows: Vec<MergeRow> = self
            .db
            .rows(
                Q,
                (cluster, ns, hour, sl),
                10_000_000,
                "log blocks to merge",
            )
            .await?;
        let mut by_stream: BTreeMap<i64, Vec<MergeRow>> = BTreeMap::new();
        for r in rows {
            by_stream.entry(r.0).or_default().push(r);
        }
        let mut merged = 0u64;
        for (stream, mut blocks) in by_stream {
            if blocks.len() < 2 {
                continue;
            }
            // Write order, so equal timestamps keep it (older first).
            blocks.sort_by_key(|b| (b.2, b.1));
            let replaced: HashSet<i64> = blocks
                .iter()
                .filter_map(|b| b.4.as_ref())
                .flat_map(|m| merged_ids(m))
                .collect();
            if !mergeable(&blocks, &replaced) {
                tracing::debug!(
                    cluster,
                    namespace = ns,
                    hour,
                    stream,
                    "log blocks of a busy stream left unmerged (too large for one cassandra cell)"
                );
                continue;
            }
            let mut records: Vec<LogRecord> = Vec::new();
            let mut ids = Vec::new();
            let mut first_seq = i64::MIN;
            for (_, id, seq, data, ..) in &blocks {
                if replaced.contains(id) {
                    continue;
                }
                let b = decode_block(data, true).map_err(|e| {
                    Error::Corrupt(format!("log block {cluster}/{ns}/{hour}/{id}: {e}"))
                })?;
                records.extend((0..b.ts.len()).map(|i| b.record(i)));
                if *id != MERGED {
                    ids.push(*id);
                }
                first_seq = first_seq.max(*seq);
            }
            records.sort_by_key(|r| r.timestamp_ns);
            let views: Vec<RecView<'_>> = records.iter().map(RecView::of).collect();
            let mut z = zstd::bulk::Compressor::new(self.zstd_level).ok();
            let (data, st) = encode_block(&views, z.as_mut());
            let mut all_ids: Vec<i64> = replaced.iter().copied().collect();
            all_ids.extend(&ids);
            all_ids.sort_unstable();
            all_ids.dedup();
            let merged_from: Vec<u8> = all_ids.iter().flat_map(|i| i.to_le_bytes()).collect();
            self.db
                .write(
                    MERGED_W,
                    (
                        cluster,
                        ns,
                        hour,
                        sl,
                        stream,
                        MERGED,
                        first_seq,
                        st.min_ns,
                        st.max_ns,
                        st.count as i32,
                        st.raw_bytes.min(i32::MAX as usize) as i32,
                        st.levels_blob(),
                        data,
                        merged_from,
                        self.ttl_secs(st.max_ns, now),
                    ),
                )
                .await?;
            // Every block but the merged one (`MERGED` is the largest id),
            // up to the newest write time read and never later than the
            // skew allowance before the pass: nothing written since.
            let Some(newest) = blocks.iter().filter_map(|b| b.5).max() else {
                continue;
            };
            let at = tombstone_time(newest, started);
            self.db
                .write(DEL, (at, cluster, ns, hour, sl, stream, MERGED))
                .await?;
            merged += ids.len() as u64;
        }
        Ok(merged)
    }

    /// Deletes the block partitions of hours wholly before the horizon
    /// (TTLs expire them too; this makes an injected `now` take effect).
    async fn expire(&self, now: i64) -> Result<u64> {
        const CLUSTERS: &str = "SELECT cluster FROM clusters WHERE day = ?";
        const STREAMS: &str = "SELECT namespace FROM log_streams WHERE cluster = ? AND day = ?";
        const COUNT: &str = "SELECT block_id FROM log_blocks WHERE cluster = ? AND namespace = ? AND hour = ? AND slot = ?";
        const DEL: &str = "DELETE FROM log_blocks USING TIMESTAMP ? WHERE cluster = ? AND namespace = ? AND hour = ? AND slot = ?";
        const DEL_STREAMS: &str =
            "DELETE FROM log_streams USING TIMESTAMP ? WHERE cluster = ? AND day = ?";
        let first_kept = hour_of(self.horizon_ns(now));
        let done = self.expired_before_hour.load(Ordering::Relaxed);
        let from = if done == i64::MIN {
            first_kept - 4
        } else {
            done
        };
        let mut expired = 0u64;
        let mut namespaces: HashMap<(String, i32), Vec<String>> = HashMap::new();
        for hour in from..first_kept {
            let d = day_of_hour(hour);
            let clusters: Vec<(String,)> =
                self.db.rows(CLUSTERS, (d,), 100_000, "clusters").await?;
            for (cluster,) in clusters {
                let key = (cluster.clone(), d);
                if !namespaces.contains_key(&key) {
                    let rows: Vec<(String,)> = self
                        .db
                        .rows(STREAMS, (cluster.as_str(), d), 1_000_000, "log streams")
                        .await?;
                    let set: BTreeSet<String> = rows.into_iter().map(|r| r.0).collect();
                    namespaces.insert(key.clone(), set.into_iter().collect());
                }
                for ns in namespaces.get(&key).into_iter().flatten() {
                    for sl in 0..SLOTS {
                        let ids: Vec<(i64,)> = self
                            .db
                            .rows(
                                COUNT,
                                (cluster.as_str(), ns.as_str(), hour, sl),
                                10_000_000,
                                "log blocks",
                            )
                            .await?;
                        if ids.is_empty() {
                            continue;
                        }
                        expired += ids.len() as u64;
                        self.db
                            .write(DEL, (DELETE_TS_US, cluster.as_str(), ns.as_str(), hour, sl))
                            .await?;
                    }
                }
                // A day's streams go with its last hour.
                if (hour + 1) % HOURS_PER_DAY == 0 {
                    self.db
                        .write(DEL_STREAMS, (DELETE_TS_US, cluster.as_str(), d))
                        .await?;
                }
            }
        }
        self.expired_before_hour
            .fetch_max(first_kept, Ordering::Relaxed);
        Ok(expired)
    }
}

/// The write time of a merge's range tombstone: the newest block read, but
/// no later than the pass's delete time `started`
/// ([`super::session::maintenance_delete_time_us`]).
fn tombstone_time(newest_read: i64, started: i64) -> i64 {
    newest_read.min(started)
}

/// A block as merging reads it: (stream, block_id, first_seq, data,
/// merged_from, write time of data).
type MergeRow = (i64, i64, i64, Vec<u8>, Option<Vec<u8>>, Option<i64>);

/// Whether the blocks a merge would read (those no merged block replaces)
/// fit one merged block under [`MAX_MERGED_BYTES`].
fn mergeable(blocks: &[MergeRow], replaced: &HashSet<i64>) -> bool {
    let bytes: usize = blocks
        .iter()
        .filter(|b| !replaced.contains(&b.1))
        .map(|b| b.3.len())
        .sum();
    bytes <= MAX_MERGED_BYTES
}

/// The block ids a merged block lists (8 bytes each, little endian).
fn merged_ids(b: &[u8]) -> Vec<i64> {
    b.chunks_exact(8)
        .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect()
}

#[async_trait]
impl LogStore for CassandraLogStore {
    async fn write_logs(&self, batch: LogBatch) -> Result<LogWriteOutcome> {
        self.write(batch).await
    }

    async fn query_logs(&self, query: &LogQuery) -> Result<LogPage> {
        self.page(query).await
    }

    async fn log_rate(&self, query: &LogRateQuery) -> Result<Vec<LogRatePoint>> {
        self.rate(query).await
    }

    async fn maintain_logs(&self, now_ms: i64) -> Result<LogMaintenance> {
        self.maintain(now_ms).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hour_and_day_arithmetic() {
        assert_eq!(hour_of(0), 0);
        assert_eq!(hour_of(HOUR_NS - 1), 0);
        assert_eq!(hour_of(-1), -1);
        assert_eq!(day_of_hour(23), 0);
        assert_eq!(day_of_hour(24), 1);
        assert_eq!(day_of_hour(-1), -1);
        // The day of an hour is the day of its records (in ms).
        let ts_ns = 1_717_171_717_123_456_789i64;
        assert_eq!(
            day_of_hour(hour_of(ts_ns)) as i64,
            (ts_ns / 1_000_000).div_euclid(DAY_MS)
        );
    }

    #[test]
    fn block_ids_are_stable_and_distinct() {
        let a = block_id(7, 1, 10);
        assert_eq!(a, block_id(7, 1, 10), "a retry overwrites its rows");
        assert_ne!(a, block_id(8, 1, 10));
        assert_ne!(a, block_id(7, 2, 10));
        assert_ne!(a, block_id(7, 1, 11));
        assert_ne!(block_id(0, 0, 0), MERGED);
        // Merging deletes `block_id < MERGED`: every block but the merged one.
        const { assert!(MERGED == i64::MAX) };
    }

    #[test]
    fn a_merge_tombstone_spares_blocks_written_within_the_skew_allowance() {
        use super::super::session::{maintenance_delete_time_us, WRITER_CLOCK_SKEW_US};
        let now = 1_800_000_000_000_000;
        let started = now - WRITER_CLOCK_SKEW_US;
        // Everything read was written long before: the newest read bounds it.
        assert_eq!(
            tombstone_time(now - 3_600_000_000, started),
            now - 3_600_000_000
        );
        // A block read a second before the pass: the tombstone stays a
        // minute back, so a writer a minute slow is not shadowed.
        assert_eq!(tombstone_time(now - 1_000_000, started), started);
        // The pass's delete time is the skew allowance behind the clock.
        let started = maintenance_delete_time_us();
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or_default();
        assert!(started <= wall - WRITER_CLOCK_SKEW_US);
    }

    #[test]
    fn only_blocks_that_fit_one_cell_are_merged() {
        let block = |id: i64, bytes: usize| (1i64, id, id, vec![0u8; bytes], None, Some(id));
        let none = HashSet::new();
        let small = vec![block(1, 1000), block(2, 1000)];
        assert!(mergeable(&small, &none));
        let big = vec![
            block(1, MAX_MERGED_BYTES / 2),
            block(2, MAX_MERGED_BYTES / 2 + 1),
        ];
        assert!(!mergeable(&big, &none));
        // Blocks a merged block already holds are not read again.
        let replaced: HashSet<i64> = [2].into_iter().collect();
        assert!(mergeable(&big, &replaced));
    }

    #[test]
    fn merged_ids_round_trip() {
        let ids = [i64::MIN, -1, 0, 42, i64::MAX - 1];
        let b: Vec<u8> = ids.iter().flat_map(|i| i.to_le_bytes()).collect();
        assert_eq!(merged_ids(&b), ids);
        assert!(
            merged_ids(&[1, 2, 3]).is_empty(),
            "a short blob lists nothing"
        );
    }
}
