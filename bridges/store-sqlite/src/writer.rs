//! The single writer thread: group commit of writes, compaction, retention
//! and the replay of `head_wal` at start-up.
//!
//! Write path, for a group of batches drained from the bounded queue:
//! 1. plan (head read lock): resolve series, drop samples older than
//!    retention, refuse new series over the cap, and classify every sample
//!    as new or duplicate against the head, the group's earlier samples and,
//!    for windows already compacted, the SQLite chunk;
//! 2. commit one transaction: the new `series` rows and one `head_wal` row
//!    per batch with its accepted samples;
//! 3. apply the plan to the head (write lock) and answer each batch.
//!
//! A failed commit answers every batch of the group with a retryable error
//! and leaves the head untouched: nothing of it is visible.

use super::hash::{FastMap, FastSet};
use super::head::{series_key, Head, Presence};
use super::schema::{self, META_COMPACTED_UNTIL};
use super::{lock_read, lock_write, Shared};
use kube_insight_core::{Labels, Sample};
use kube_insight_store::chunk::{self, ChunkAppender};
use kube_insight_store::codec::{self, WalSample};
use kube_insight_store::error::{Error, Result};
use kube_insight_store::metrics::WriteOutcome;
use kube_insight_store::series_cap::CapGate;
use kube_insight_store::MaintenanceReport;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// One series of a batch, prepared by the caller's task.
pub(crate) struct PreparedSeries {
    /// The id the caller found in the head; re-checked by the writer.
    pub id: Option<u32>,
    /// [`super::head::series_key`] of the labels.
    pub key: u128,
    /// Needed only to create the series: `None` once the caller resolved the
    /// id (the labels are then freed on the caller's thread, not the
    /// writer's).
    pub labels: Option<Labels>,
    /// This series' samples in [`PreparedBatch::samples`]: sorted by
    /// timestamp, one sample per timestamp.
    pub samples: std::ops::Range<usize>,
}

pub(crate) struct PreparedBatch {
    pub cluster: String,
    pub series: Vec<PreparedSeries>,
    /// Every series' samples in one allocation (freeing one `Vec` per series
    /// would cost the single writer thread a `free()` per series).
    pub samples: Vec<Sample>,
    /// What the caller already counted (duplicates inside the batch).
    pub outcome: WriteOutcome,
}

pub(crate) enum Msg {
    Write {
        batch: PreparedBatch,
        reply: oneshot::Sender<Result<WriteOutcome>>,
    },
    Maintain {
        now_ms: i64,
        reply: oneshot::Sender<Result<MaintenanceReport>>,
    },
    Flush {
        reply: oneshot::Sender<Result<()>>,
    },
}

/// At most this many batches, or about this many samples, per commit.
const MAX_GROUP_BATCHES: usize = 64;
const MAX_GROUP_SAMPLES: usize = 100_000;
/// Series per compaction transaction; queued writes run between slices.
const COMPACTION_SLICE: usize = 4_096;

/// A series created by the group being planned.
struct NewSeries {
    id: u32,
    cluster: String,
    labels: Labels,
    key: u128,
    first_ms: i64,
    last_ms: i64,
}

/// What a group will do once committed.
#[derive(Default)]
struct Plan {
    new_series: Vec<NewSeries>,
    new_by_key: FastMap<u128, usize>,
    new_per_cluster: HashMap<String, u64>,
    /// Accepted samples in arrival order; each batch's are a contiguous range.
    samples: Vec<WalSample>,
    /// Per series, the largest timestamp accepted in this group.
    max_ts: FastMap<u32, i64>,
    /// Every accepted (series, timestamp), built on the first sample that is
    /// not after its series' `max_ts` (a re-send inside one group).
    seen: Option<FastSet<(u32, i64)>>,
    /// Timestamps of compacted chunks read for dedup, by (series, window).
    chunk_ts: FastMap<(u32, i64), Box<[i64]>>,
    next_id: u32,
}

/// Reads the timestamps of one stored chunk (empty when there is none). A
/// chunk that does not decode is logged and treated as empty: it is
/// replaced at the next merge rather than blocking writes forever.
fn chunk_timestamps(conn: &Connection, id: u32, window_start: i64) -> Result<Box<[i64]>> {
    let data: Option<Vec<u8>> = conn
        .prepare_cached("SELECT data FROM chunks WHERE series_id = ?1 AND start_ms = ?2")
        .and_then(|mut st| {
            st.query_row(params![id, window_start], |r| r.get(0))
                .optional()
        })
        .map_err(|e| Error::Unavailable(format!("reading chunk of series {id}: {e}")))?;
    let Some(data) = data else {
        return Ok(Box::default());
    };
    match chunk::decode(&data) {
        Ok(s) => Ok(s.into_iter().map(|s| s.0).collect()),
        Err(e) => {
            tracing::error!(series_id = id, window_start, error = %e, "corrupt chunk: treated as empty");
            Ok(Box::default())
        }
    }
}

impl Plan {
    fn new(next_id: u32) -> Self {
        Plan {
            next_id,
            ..Default::default()
        }
    }

    /// Whether `ts` of `id` is new; records it in the plan if so.
    fn accept(
        &mut self,
        head: &Head,
        conn: &Connection,
        id: u32,
        existing: bool,
        ts: i64,
        v: f64,
    ) -> Result<bool> {
        if self.max_ts.get(&id).is_some_and(|&m| ts <= m) {
            let Plan { seen, samples, .. } = self;
            let seen = seen.get_or_insert_with(|| samples.iter().map(|s| (s.0, s.1)).collect());
            if seen.contains(&(id, ts)) {
                return Ok(false);
            }
        }
        if existing {
            match head.presence(id, ts) {
                Presence::Present => return Ok(false),
                Presence::Absent => {}
                Presence::CheckChunk { window_start } => {
                    let key = (id, window_start);
                    if let std::collections::hash_map::Entry::Vacant(e) = self.chunk_ts.entry(key) {
                        e.insert(chunk_timestamps(conn, id, window_start)?);
                    }
                    if self
                        .chunk_ts
                        .get(&key)
                        .is_some_and(|t| t.binary_search(&ts).is_ok())
                    {
                        return Ok(false);
                    }
                }
            }
        }
        self.samples.push((id, ts, v));
        let m = self.max_ts.entry(id).or_insert(ts);
        *m = (*m).max(ts);
        if let Some(seen) = &mut self.seen {
            seen.insert((id, ts));
        }
        Ok(true)
    }

    /// Plans one batch: its outcome and the range of `samples` it accepted.
    /// `None` when an id the caller resolved is gone (retention removed the
    /// series meanwhile): the batch is answered with a retryable error and
    /// nothing of it is planned.
    fn add_batch(
        &mut self,
        head: &Head,
        conn: &Connection,
        batch: PreparedBatch,
        cutoff_ms: i64,
        cap: &mut Cap,
    ) -> Result<Option<(WriteOutcome, std::ops::Range<usize>)>> {
        if batch.series.iter().any(|s| {
            s.id.is_some_and(|id| !head.series.contains_key(&id))
                || (s.id.is_none() && s.labels.is_none())
        }) {
            return Ok(None);
        }
        let mut out = batch.outcome;
        let start = self.samples.len();
        for ps in batch.series {
            let samples = batch.samples.get(ps.samples.clone()).unwrap_or_default();
            let fresh = samples
                .iter()
                .filter(|s| s.timestamp_ms >= cutoff_ms)
                .count();
            out.samples_too_old += (samples.len() - fresh) as u64;
            if fresh == 0 {
                continue;
            }
            let known = ps.id.or_else(|| head.lookup(ps.key));
            let (id, existing) = match known {
                Some(id) => (id, true),
                None => match self.new_by_key.get(&ps.key) {
                    Some(&i) => (self.new_series[i].id, false),
                    None => {
                        let active = head.active_in(&batch.cluster)
                            + self
                                .new_per_cluster
                                .get(&batch.cluster)
                                .copied()
                                .unwrap_or(0);
                        let since = cap.now_ms.saturating_sub(cap.grace_ms);
                        let planned = active - head.active_in(&batch.cluster);
                        let admitted =
                            cap.gate
                                .admit(&batch.cluster, active, cap.limit, cap.now_ms, || {
                                    head.live_in(&batch.cluster, since) + planned
                                });
                        if !admitted {
                            out.series_rejected_limit += 1;
                            out.samples_rejected_limit += fresh as u64;
                            continue;
                        }
                        let Some(labels) = ps.labels else {
                            continue; // unreachable: checked above
                        };
                        let id = self.next_id;
                        self.next_id = id.checked_add(1).ok_or_else(|| {
                            Error::Unavailable("series ids exhausted (u32)".into())
                        })?;
                        self.new_by_key.insert(ps.key, self.new_series.len());
                        self.new_series.push(NewSeries {
                            id,
                            cluster: batch.cluster.clone(),
                            labels,
                            key: ps.key,
                            first_ms: i64::MAX,
                            last_ms: i64::MIN,
                        });
                        *self
                            .new_per_cluster
                            .entry(batch.cluster.clone())
                            .or_insert(0) += 1;
                        out.series_created += 1;
                        (id, false)
                    }
                },
            };
            let before = self.samples.len();
            for s in samples.iter().filter(|s| s.timestamp_ms >= cutoff_ms) {
                if self.accept(head, conn, id, existing, s.timestamp_ms, s.value)? {
                    out.samples_written += 1;
                } else {
                    out.samples_duplicate += 1;
                }
            }
            if !existing && self.samples.len() > before {
                if let Some(&i) = self.new_by_key.get(&ps.key) {
                    let ns = &mut self.new_series[i];
                    for &(_, t, _) in &self.samples[before..] {
                        ns.first_ms = ns.first_ms.min(t);
                        ns.last_ms = ns.last_ms.max(t);
                    }
                }
            }
        }
        Ok(Some((out, start..self.samples.len())))
    }

    /// Applies a committed plan to the head.
    fn apply(mut self, head: &mut Head, now_ms: i64) {
        for n in &self.new_series {
            head.insert_series(n.id, &n.cluster, &n.labels, n.key, n.first_ms, n.last_ms);
        }
        let mut chunk_ts = std::mem::take(&mut self.chunk_ts);
        for_each_run(&self.samples, |id, run| {
            head.add_samples(id, run, false, |ws| {
                chunk_ts.remove(&(id, ws)).unwrap_or_default()
            });
            head.touch(id, now_ms);
        });
        head.next_id = head.next_id.max(self.next_id);
    }
}

/// The series cap as one write group sees it.
struct Cap<'a> {
    limit: u64,
    now_ms: i64,
    grace_ms: i64,
    gate: &'a mut CapGate,
}

/// Calls `f` for each run of consecutive samples of one series.
fn for_each_run(samples: &[WalSample], mut f: impl FnMut(u32, &[(i64, f64)])) {
    let mut buf: Vec<(i64, f64)> = Vec::new();
    let mut i = 0;
    while i < samples.len() {
        let id = samples[i].0;
        buf.clear();
        while i < samples.len() && samples[i].0 == id {
            buf.push((samples[i].1, samples[i].2));
            i += 1;
        }
        f(id, &buf);
    }
}

/// Loads every series and replays `head_wal` into a fresh head. Runs before
/// the writer starts, so nothing else touches the head.
pub(crate) fn load(conn: &Connection, head: &mut Head) -> Result<ReplayStats> {
    let sq = |e: rusqlite::Error| Error::Unavailable(format!("loading the sqlite store: {e}"));
    let started = std::time::Instant::now();
    {
        let mut st = conn
            .prepare("SELECT id, cluster, labels, first_ms, last_ms FROM series ORDER BY id")
            .map_err(sq)?;
        let mut rows = st.query([]).map_err(sq)?;
        while let Some(r) = rows.next().map_err(sq)? {
            let id: i64 = r.get(0).map_err(sq)?;
            let cluster: String = r.get(1).map_err(sq)?;
            let blob: Vec<u8> = r.get(2).map_err(sq)?;
            let first: i64 = r.get(3).map_err(sq)?;
            let last: i64 = r.get(4).map_err(sq)?;
            let id = u32::try_from(id)
                .map_err(|_| Error::Corrupt(format!("series id {id} out of range")))?;
            let labels = codec::decode_labels(&blob)?;
            head.insert_series(id, &cluster, &labels, series_key(&labels), first, last);
        }
    }
    let seq: Option<i64> = conn
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'series'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(sq)?;
    if let Some(seq) = seq {
        head.next_id = head
            .next_id
            .max(u32::try_from(seq.saturating_add(1)).unwrap_or(u32::MAX));
    }
    head.compacted_until = schema::meta_get(conn, META_COMPACTED_UNTIL)
        .map_err(sq)?
        .unwrap_or(i64::MIN);
    let series_ms = started.elapsed().as_millis() as u64;

    let mut stats = ReplayStats {
        series: head.len() as u64,
        ..Default::default()
    };
    let mut st = conn
        .prepare("SELECT id, data FROM head_wal ORDER BY id")
        .map_err(sq)?;
    let mut rows = st.query([]).map_err(sq)?;
    while let Some(r) = rows.next().map_err(sq)? {
        let row_id: i64 = r.get(0).map_err(sq)?;
        let data = r
            .get_ref(1)
            .map_err(sq)?
            .as_blob()
            .map_err(|e| sq(e.into()))?;
        let samples = match codec::decode_wal(data) {
            Ok(s) => s,
            Err(e) => {
                // A committed row cannot be torn (SQLite is transactional):
                // this is disk corruption. Keep going with the rest.
                tracing::error!(row_id, error = %e, "skipping an unreadable head_wal row");
                stats.rows_unreadable += 1;
                continue;
            }
        };
        stats.rows += 1;
        let mut err = None;
        for_each_run(&samples, |id, run| {
            if !head.series.contains_key(&id) {
                stats.samples_unknown_series += run.len() as u64;
                return;
            }
            let (added, dups) =
                head.add_samples(id, run, true, |ws| match chunk_timestamps(conn, id, ws) {
                    Ok(t) => t,
                    Err(e) => {
                        err = Some(e);
                        Box::default()
                    }
                });
            stats.samples += added;
            stats.duplicates += dups;
        });
        if let Some(e) = err {
            return Err(e);
        }
    }
    head.touch_open(kube_insight_core::time::now_ms());
    stats.elapsed_ms = started.elapsed().as_millis() as u64;
    tracing::info!(
        series = stats.series,
        series_load_ms = series_ms,
        wal_rows = stats.rows,
        samples = stats.samples,
        duplicates = stats.duplicates,
        elapsed_ms = stats.elapsed_ms,
        "sqlite head rebuilt from head_wal"
    );
    Ok(stats)
}

/// What [`load`] did (logged, and exposed for tests and benches).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayStats {
    pub series: u64,
    pub rows: u64,
    pub rows_unreadable: u64,
    pub samples: u64,
    pub duplicates: u64,
    pub samples_unknown_series: u64,
    pub elapsed_ms: u64,
}

/// A window to compact: its samples as copied out of the head.
struct CompactJob {
    id: u32,
    start_ms: i64,
    /// The appender's bytes when they are the whole window (no late samples,
    /// no out-of-order samples): stored as they are.
    bytes: Option<Vec<u8>>,
    /// Otherwise every sample, sorted.
    samples: Vec<(i64, f64)>,
    late: bool,
    count: usize,
}

pub(crate) struct Writer {
    conn: Connection,
    zstd: zstd::bulk::Compressor<'static>,
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Msg>,
    deferred: VecDeque<Msg>,
    /// The series cap's counts of the clusters at it.
    cap_gate: CapGate,
}

type WriteReply = oneshot::Sender<Result<WriteOutcome>>;

impl Writer {
    pub(crate) fn new(
        conn: Connection,
        shared: Arc<Shared>,
        rx: mpsc::Receiver<Msg>,
    ) -> Result<Self> {
        Ok(Writer {
            conn,
            zstd: codec::wal_compressor()?,
            shared,
            rx,
            deferred: VecDeque::new(),
            cap_gate: CapGate::default(),
        })
    }

    /// The thread body: runs until every sender is gone.
    pub(crate) fn run(mut self) {
        loop {
            let msg = match self.deferred.pop_front() {
                Some(m) => m,
                None => match self.rx.blocking_recv() {
                    Some(m) => m,
                    None => break,
                },
            };
            match msg {
                Msg::Write { batch, reply } => {
                    let mut group = vec![(batch, reply)];
                    self.fill_group(&mut group);
                    self.commit_group(group);
                }
                Msg::Maintain { now_ms, reply } => {
                    let r = self.maintain(now_ms);
                    if let Err(e) = &r {
                        tracing::error!(error = %e, now_ms, "sqlite maintenance failed");
                    }
                    let _ = reply.send(r);
                }
                Msg::Flush { reply } => {
                    let _ = reply.send(self.flush());
                }
            }
        }
        if let Err(e) = self.flush() {
            tracing::warn!(error = %e, "sqlite checkpoint at shutdown failed");
        }
        tracing::debug!(path = %self.shared.path_str, "sqlite writer stopped");
    }

    /// Drains queued writes into the group (group commit); a non-write
    /// message ends the group and is handled next.
    fn fill_group(&mut self, group: &mut Vec<(PreparedBatch, WriteReply)>) {
        let mut samples: usize = group.iter().map(|(b, _)| b.samples.len()).sum();
        while group.len() < MAX_GROUP_BATCHES && samples < MAX_GROUP_SAMPLES {
            match self.rx.try_recv() {
                Ok(Msg::Write { batch, reply }) => {
                    samples += batch.samples.len();
                    group.push((batch, reply));
                }
                Ok(other) => {
                    self.deferred.push_back(other);
                    break;
                }
                Err(_) => break,
            }
        }
    }

    /// Runs queued writes (between compaction slices), deferring the rest.
    fn drain_writes(&mut self) {
        loop {
            let mut group = Vec::new();
            while group.len() < MAX_GROUP_BATCHES {
                match self.rx.try_recv() {
                    Ok(Msg::Write { batch, reply }) => group.push((batch, reply)),
                    Ok(other) => self.deferred.push_back(other),
                    Err(_) => break,
                }
            }
            if group.is_empty() {
                return;
            }
            self.commit_group(group);
        }
    }

    fn now_ms(&self) -> i64 {
        kube_insight_core::time::now_ms().max(self.shared.now_floor.load(Ordering::Relaxed))
    }

    fn commit_group(&mut self, group: Vec<(PreparedBatch, WriteReply)>) {
        let started = std::time::Instant::now();
        let retention_ms = self.shared.options.retention.metrics.as_millis() as i64;
        let cutoff = self.now_ms().saturating_sub(retention_ms);
        let now_ms = self.now_ms();
        let mut cap = Cap {
            limit: self.shared.options.max_series_per_cluster as u64,
            now_ms,
            grace_ms: self.shared.options.head_grace.as_millis() as i64,
            gate: &mut self.cap_gate,
        };
        let mut replies = Vec::with_capacity(group.len());
        let mut rows: Vec<(i64, Vec<u8>)> = Vec::with_capacity(group.len());
        let mut outcomes = Vec::with_capacity(group.len());

        let planned: Result<Plan> = (|| {
            let head = lock_read(&self.shared.head);
            let mut plan = Plan::new(head.next_id);
            for (batch, reply) in group {
                replies.push(reply);
                match plan.add_batch(&head, &self.conn, batch, cutoff, &mut cap)? {
                    Some((outcome, range)) => {
                        if !range.is_empty() {
                            let part = &plan.samples[range];
                            let max_ts = part.iter().map(|s| s.1).max().unwrap_or(i64::MIN);
                            rows.push((max_ts, codec::encode_wal(part, &mut self.zstd)?));
                        }
                        outcomes.push(Some(outcome));
                    }
                    None => outcomes.push(None),
                }
            }
            Ok(plan)
        })();
        let plan = match planned {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "metrics write group failed before commit");
                for r in replies {
                    let _ = r.send(Err(retryable(&e)));
                }
                return;
            }
        };
        let n_batches = replies.len();
        if let Err(e) = self.commit(&plan, &rows) {
            tracing::warn!(error = %e, batches = n_batches, "metrics write group failed to commit; nothing applied");
            for r in replies {
                let _ = r.send(Err(Error::Unavailable(format!(
                    "sqlite store {}: commit failed: {e}",
                    self.shared.path_str
                ))));
            }
            return;
        }
        let samples = plan.samples.len();
        {
            let mut head = lock_write(&self.shared.head);
            plan.apply(&mut head, now_ms);
        }
        for (r, o) in replies.into_iter().zip(outcomes) {
            let _ = r.send(o.ok_or_else(|| {
                Error::Unavailable(
                    "a series of the batch was removed by retention while it was queued; retry"
                        .into(),
                )
            }));
        }
        tracing::trace!(
            batches = n_batches,
            samples,
            elapsed_us = started.elapsed().as_micros() as u64,
            "metrics group committed"
        );
    }

    fn commit(&mut self, plan: &Plan, rows: &[(i64, Vec<u8>)]) -> rusqlite::Result<()> {
        if plan.new_series.is_empty() && rows.is_empty() {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO series (id, cluster, labels, first_ms, last_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for n in &plan.new_series {
                ins.execute(params![
                    n.id,
                    n.cluster,
                    codec::encode_labels(&n.labels),
                    n.first_ms,
                    n.last_ms,
                ])?;
            }
            let mut wal =
                tx.prepare_cached("INSERT INTO head_wal (max_ts, data) VALUES (?1, ?2)")?;
            for (max_ts, data) in rows {
                wal.execute(params![max_ts, data])?;
            }
        }
        tx.commit()
    }

    fn flush(&mut self) -> Result<()> {
        let r: rusqlite::Result<(i64, i64, i64)> =
            self.conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                });
        match r {
            Ok((busy, log, done)) => {
                if busy != 0 {
                    tracing::debug!(log, done, "sqlite checkpoint partly blocked by readers");
                }
                Ok(())
            }
            Err(e) => Err(self.sql_err(e)),
        }
    }

    fn sql_err(&self, e: rusqlite::Error) -> Error {
        Error::Sqlite {
            path: self.shared.path_str.clone(),
            source: e.into(),
        }
    }

    /// Compaction then retention. See [`kube_insight_store::Store::maintain`].
    fn maintain(&mut self, now_ms: i64) -> Result<MaintenanceReport> {
        let started = std::time::Instant::now();
        self.shared.now_floor.fetch_max(now_ms, Ordering::Relaxed);
        let opts = &self.shared.options;
        let window = lock_read(&self.shared.head).window_ms;
        let grace = opts.head_grace.as_millis() as i64;
        let cutoff = now_ms.saturating_sub(opts.retention.metrics.as_millis() as i64);
        let mut report = MaintenanceReport::default();

        // Every window ending at or before `until` is closed: its end plus the
        // grace is before now.
        let until = now_ms
            .saturating_sub(grace)
            .saturating_sub(1)
            .div_euclid(window)
            .saturating_mul(window);
        let old_until = lock_read(&self.shared.head).compacted_until;
        if until > old_until {
            schema::meta_set(&self.conn, META_COMPACTED_UNTIL, until)
                .map_err(|e| self.sql_err(e))?;
            lock_write(&self.shared.head).compacted_until = until;
        }
        let until = until.max(old_until);

        let ids: Vec<u32> = {
            let head = lock_read(&self.shared.head);
            head.all_ids()
                .iter()
                .copied()
                .filter(|id| {
                    head.series.get(id).is_some_and(|s| {
                        s.windows
                            .first()
                            .is_some_and(|w| w.start_ms.saturating_add(window) <= until)
                    })
                })
                .collect()
        };
        for slice in ids.chunks(COMPACTION_SLICE) {
            let (chunks, samples) = self.compact_slice(slice, until, cutoff, window)?;
            report.chunks_written += chunks;
            report.samples_compacted += samples;
            self.drain_writes();
        }
        report.rows_expired += self.retention(cutoff, window)?;
        tracing::info!(
            now_ms,
            compacted_until = until,
            chunks_written = report.chunks_written,
            samples_compacted = report.samples_compacted,
            rows_expired = report.rows_expired,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "sqlite maintenance pass"
        );
        Ok(report)
    }

    /// Seals the closed windows of some series into chunks (one transaction),
    /// then drops them from the head.
    fn compact_slice(
        &mut self,
        ids: &[u32],
        until: i64,
        cutoff: i64,
        window: i64,
    ) -> Result<(u64, u64)> {
        let mut jobs = Vec::new();
        let mut bounds = Vec::new();
        {
            let head = lock_read(&self.shared.head);
            for &id in ids {
                let Some(s) = head.series.get(&id) else {
                    continue;
                };
                for w in &s.windows {
                    if w.start_ms.saturating_add(window) > until {
                        break;
                    }
                    let simple = w.ooo().is_empty() && !w.is_late();
                    jobs.push(CompactJob {
                        id,
                        start_ms: w.start_ms,
                        bytes: simple.then(|| w.app.bytes().to_vec()),
                        samples: if simple { Vec::new() } else { w.samples() },
                        late: w.is_late(),
                        count: w.len(),
                    });
                }
                bounds.push((id, s.first_ms, s.last_ms));
            }
        }
        let mut written = 0u64;
        let mut samples = 0u64;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| Error::Sqlite {
                path: self.shared.path_str.clone(),
                source: e.into(),
            })?;
        let sq = |e: rusqlite::Error| Error::Sqlite {
            path: self.shared.path_str.clone(),
            source: e.into(),
        };
        {
            let mut ins_chunk = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO chunks (series_id, start_ms, end_ms, count, data)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(sq)?;
            let mut ins_rollup = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO rollups (series_id, window_start_ms, data)
                     VALUES (?1, ?2, ?3)",
                )
                .map_err(sq)?;
            let mut get_chunk = tx
                .prepare_cached("SELECT data FROM chunks WHERE series_id = ?1 AND start_ms = ?2")
                .map_err(sq)?;
            for job in &jobs {
                if job.start_ms.saturating_add(window) <= cutoff {
                    continue; // wholly past retention: dropped, not written
                }
                let (data, all) = match (&job.bytes, job.late) {
                    (Some(b), false) => {
                        let all = chunk::decode(b).map_err(|e| {
                            Error::Corrupt(format!("head chunk of series {}: {e}", job.id))
                        })?;
                        (b.clone(), all)
                    }
                    _ => {
                        let mut all = job.samples.clone();
                        if job.late {
                            let old: Option<Vec<u8>> = get_chunk
                                .query_row(params![job.id, job.start_ms], |r| r.get(0))
                                .optional()
                                .map_err(sq)?;
                            if let Some(old) = old {
                                match chunk::decode(&old) {
                                    Ok(prev) => {
                                        all.extend(prev);
                                        all.sort_by_key(|s| s.0);
                                        all.dedup_by_key(|s| s.0);
                                    }
                                    Err(e) => tracing::error!(
                                        series_id = job.id,
                                        window_start = job.start_ms,
                                        error = %e,
                                        "corrupt chunk replaced by the late samples of its window"
                                    ),
                                }
                            }
                        }
                        let mut app = ChunkAppender::new();
                        for &(t, v) in &all {
                            app.push(t, v).map_err(|e| {
                                Error::Corrupt(format!("re-encoding series {}: {e}", job.id))
                            })?;
                        }
                        (app.bytes().to_vec(), all)
                    }
                };
                let Some(&(end_ms, _)) = all.last() else {
                    continue;
                };
                ins_chunk
                    .execute(params![
                        job.id,
                        job.start_ms,
                        end_ms,
                        all.len() as i64,
                        data
                    ])
                    .map_err(sq)?;
                let rollup = chunk::encode_rollups(&chunk::rollup_5m(&all));
                ins_rollup
                    .execute(params![job.id, job.start_ms, rollup])
                    .map_err(sq)?;
                written += 1;
                samples += job.count as u64;
            }
            let mut upd = tx
                .prepare_cached("UPDATE series SET first_ms = ?2, last_ms = ?3 WHERE id = ?1")
                .map_err(sq)?;
            for &(id, first, last) in &bounds {
                upd.execute(params![id, first, last]).map_err(sq)?;
            }
        }
        tx.commit().map_err(sq)?;
        let mut head = lock_write(&self.shared.head);
        for job in &jobs {
            head.remove_window(job.id, job.start_ms);
        }
        Ok((written, samples))
    }

    /// Deletes data older than `cutoff`, series not seen since, and the
    /// `head_wal` rows whose samples are all in chunks; then gives free
    /// pages back to the file system.
    fn retention(&mut self, cutoff: i64, window: i64) -> Result<u64> {
        let (expired_series, wal_bound) = {
            let head = lock_read(&self.shared.head);
            let expired: Vec<u32> = head
                .series
                .iter()
                .filter(|(_, s)| s.windows.is_empty() && s.last_ms < cutoff)
                .map(|(&id, _)| id)
                .collect();
            // Every sample of a head_wal row whose max_ts is below the start
            // of every open window is in a chunk (or past retention).
            let bound = head
                .series
                .values()
                .filter_map(|s| s.windows.first().map(|w| w.start_ms))
                .min()
                .unwrap_or(i64::MAX);
            (expired, bound)
        };
        let sq = |e: rusqlite::Error| Error::Sqlite {
            path: self.shared.path_str.clone(),
            source: e.into(),
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sq)?;
        let mut rows = 0u64;
        rows += tx
            .execute("DELETE FROM chunks WHERE end_ms < ?1", params![cutoff])
            .map_err(sq)? as u64;
        rows += tx
            .execute(
                "DELETE FROM rollups WHERE window_start_ms < ?1",
                params![cutoff.saturating_sub(window).saturating_add(1)],
            )
            .map_err(sq)? as u64;
        {
            let mut del_series = tx
                .prepare_cached("DELETE FROM series WHERE id = ?1")
                .map_err(sq)?;
            let mut del_chunks = tx
                .prepare_cached("DELETE FROM chunks WHERE series_id = ?1")
                .map_err(sq)?;
            let mut del_rollups = tx
                .prepare_cached("DELETE FROM rollups WHERE series_id = ?1")
                .map_err(sq)?;
            for &id in &expired_series {
                rows += del_series.execute(params![id]).map_err(sq)? as u64;
                rows += del_chunks.execute(params![id]).map_err(sq)? as u64;
                rows += del_rollups.execute(params![id]).map_err(sq)? as u64;
            }
        }
        let wal_rows = tx
            .execute("DELETE FROM head_wal WHERE max_ts < ?1", params![wal_bound])
            .map_err(sq)?;
        tx.commit().map_err(sq)?;
        {
            let mut head = lock_write(&self.shared.head);
            for &id in &expired_series {
                head.remove_series(id);
            }
        }
        if rows > 0 || wal_rows > 0 {
            let freed: rusqlite::Result<()> = (|| {
                let mut st = self.conn.prepare("PRAGMA incremental_vacuum")?;
                let mut r = st.query([])?;
                while r.next()?.is_some() {}
                Ok(())
            })();
            if let Err(e) = freed {
                tracing::warn!(error = %e, "sqlite incremental_vacuum failed");
            }
        }
        tracing::debug!(
            rows_expired = rows,
            series_expired = expired_series.len(),
            wal_rows_deleted = wal_rows,
            "sqlite retention"
        );
        Ok(rows)
    }
}

/// Errors a write answers with: the store cannot take it now, retry.
fn retryable(e: &Error) -> Error {
    if e.is_retryable() {
        Error::Unavailable(e.to_string())
    } else {
        Error::Unavailable(format!("write failed, nothing stored: {e}"))
    }
}
