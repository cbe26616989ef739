//! The logs part of the store contract.
//!
//! Records are written per stream (`cluster / namespace / pod / container`)
//! with the stream's metadata, and read back newest first, a page at a time,
//! with an opaque [`LogCursor`] to continue. Every read is bounded: the
//! bytes a query may decompress are capped ([`LogQuery::max_scan_bytes`]),
//! and going past the cap is [`crate::Error::LimitExceeded`], not a slow
//! answer.
//!
//! # Order
//! Rows come newest first: by timestamp descending, then by stream (its
//! [`stream_hash`], ascending), then, for records of one stream with the
//! same timestamp, in reverse of the order they were written. The cursor
//! names the last row returned, so paging never repeats nor skips a row,
//! even while new records arrive.
//!
//! # Idempotence
//! A batch is identified by a content hash of its cluster, streams and
//! records ([`LogBatch::content_hash`]). A batch whose hash was stored
//! within the backend's dedup window (at least an hour) is a retry: it is
//! answered `Ok` with its records counted as duplicates and stored once.

use crate::error::Result;
use async_trait::async_trait;
use kube_insight_core::log::{LineFilter, LogRecord, LogStreamKey, LogStreamMeta};
use kube_insight_core::{Level, TimeRange};
use xxhash_rust::xxh3::Xxh3;

/// The records of one stream in a batch, in the order they were produced.
#[derive(Debug, Clone, Default)]
pub struct LogStreamBatch {
    /// `key.cluster` is overwritten with the batch's cluster.
    pub key: LogStreamKey,
    pub meta: LogStreamMeta,
    pub records: Vec<LogRecord>,
}

/// Records to store for one cluster (the cluster comes from the ingest token).
#[derive(Debug, Clone, Default)]
pub struct LogBatch {
    pub cluster: String,
    pub streams: Vec<LogStreamBatch>,
}

impl LogBatch {
    pub fn record_count(&self) -> usize {
        self.streams.iter().map(|s| s.records.len()).sum()
    }

    /// The content hash a retry is recognised by: the cluster and, for each
    /// stream in order, its key and every record field. Stream metadata is
    /// left out (it is not part of the records).
    pub fn content_hash(&self) -> u128 {
        let mut h = Xxh3::new();
        let mut s = |b: &[u8]| {
            h.update(&(b.len() as u64).to_le_bytes());
            h.update(b);
        };
        s(self.cluster.as_bytes());
        for st in &self.streams {
            s(st.key.namespace.as_bytes());
            s(st.key.pod.as_bytes());
            s(st.key.container.as_bytes());
            s(&(st.records.len() as u64).to_le_bytes());
            for r in &st.records {
                s(&r.timestamp_ns.to_le_bytes());
                s(&[
                    r.stream as u8,
                    u8::from(r.partial),
                    u8::from(r.truncated),
                    r.level.map_or(0, Level::code),
                ]);
                s(r.line.as_bytes());
                match &r.fields {
                    Some(f) => s(f.as_bytes()),
                    None => s(&[0xff]),
                }
            }
        }
        h.digest128()
    }
}

/// The stable 64-bit id of a stream, the same in every backend; it orders
/// rows with equal timestamps and appears in cursors.
pub fn stream_hash(key: &LogStreamKey) -> u64 {
    let mut h = Xxh3::new();
    for part in [&key.cluster, &key.namespace, &key.pod, &key.container] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.digest()
}

/// What a log write did. A write that returns `Ok` is durable.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LogWriteOutcome {
    /// Records newly stored.
    pub records_written: u64,
    /// Records of a batch already stored (a retry): kept once.
    pub records_duplicate: u64,
    /// Records older than the log retention, refused.
    pub records_too_old: u64,
    /// Streams seen for the first time.
    pub streams_created: u64,
}

/// Where a page ended: the last row returned. Opaque to callers; its text
/// form ([`LogCursor::encode`]) is what the API hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogCursor {
    pub timestamp_ns: i64,
    pub stream_hash: u64,
    /// Rows of that stream at exactly that timestamp already returned.
    pub skip: u32,
}

impl LogCursor {
    pub fn encode(&self) -> String {
        format!(
            "{}_{:016x}_{}",
            self.timestamp_ns, self.stream_hash, self.skip
        )
    }

    pub fn decode(s: &str) -> Result<LogCursor> {
        let bad = || {
            crate::Error::InvalidQuery(format!("invalid log cursor {s:?}: pass back the next cursor of the previous page unchanged"))
        };
        let mut it = s.trim().split('_');
        let (Some(t), Some(h), Some(n), None) = (it.next(), it.next(), it.next(), it.next()) else {
            return Err(bad());
        };
        Ok(LogCursor {
            timestamp_ns: t.parse().map_err(|_| bad())?,
            stream_hash: u64::from_str_radix(h, 16).map_err(|_| bad())?,
            skip: n.parse().map_err(|_| bad())?,
        })
    }
}

/// Which streams a log read covers: every given part must match exactly.
/// `workload` is the workload name (Deployment, StatefulSet, … name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogSelector {
    pub cluster: Option<String>,
    pub namespace: Option<String>,
    pub workload: Option<String>,
    pub pod: Option<String>,
    pub container: Option<String>,
}

/// Default cap on bytes (raw, decompressed) one log query may scan.
pub const DEFAULT_MAX_SCAN_BYTES: usize = 4 << 30;

/// A page of log rows.
#[derive(Debug, Clone)]
pub struct LogQuery {
    pub selector: LogSelector,
    /// Inclusive, in milliseconds: a record at 1000.5 ms is in `[1000, 1000]`.
    pub range: TimeRange,
    /// `contains` and `regex`, evaluated on the line.
    pub filter: LineFilter,
    /// Only these levels (`None` in the list: records without a level).
    /// Empty: every record.
    pub levels: Vec<Option<Level>>,
    /// Rows per page (at least 1).
    pub limit: usize,
    /// Continue after this row (from the previous page's `next_cursor`).
    pub cursor: Option<LogCursor>,
    /// More raw bytes scanned than this before the page is full is
    /// [`crate::Error::LimitExceeded`].
    pub max_scan_bytes: usize,
}

impl LogQuery {
    pub fn new(selector: LogSelector, range: TimeRange) -> Self {
        LogQuery {
            selector,
            range,
            filter: LineFilter::default(),
            levels: Vec::new(),
            limit: 1000,
            cursor: None,
            max_scan_bytes: DEFAULT_MAX_SCAN_BYTES,
        }
    }
}

/// One row of a page: the stream and the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRow {
    pub key: LogStreamKey,
    /// The workload name, when known.
    pub workload: Option<String>,
    pub record: LogRecord,
}

#[derive(Debug, Clone, Default)]
pub struct LogPage {
    /// Newest first.
    pub rows: Vec<LogRow>,
    /// Set when more rows may follow; `None` when the range is exhausted.
    pub next_cursor: Option<LogCursor>,
    /// Raw bytes decompressed to answer.
    pub scanned_bytes: u64,
}

/// Log lines per time bucket and level.
#[derive(Debug, Clone)]
pub struct LogRateQuery {
    pub selector: LogSelector,
    pub range: TimeRange,
    pub filter: LineFilter,
    pub levels: Vec<Option<Level>>,
    /// Bucket width; buckets start at multiples of it since the epoch.
    pub step_ms: i64,
    pub max_scan_bytes: usize,
    /// More buckets than this is [`crate::Error::LimitExceeded`].
    pub max_points: usize,
}

/// One bucket of a rate answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRatePoint {
    /// Bucket start, epoch milliseconds.
    pub timestamp_ms: i64,
    /// `None`: lines without a level.
    pub level: Option<Level>,
    pub count: u64,
}

/// What one logs maintenance pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LogMaintenance {
    /// Blocks rewritten into larger ones.
    pub blocks_merged: u64,
    /// Blocks, streams and dedup entries deleted by retention.
    pub rows_expired: u64,
}

#[async_trait]
pub trait LogStore: Send + Sync {
    /// Stores the batch durably: `Ok` only once it is committed, and then it
    /// is searchable. All of it or none of it is stored. A retry of a batch
    /// already stored is answered `Ok` and stored once. Records older than
    /// retention are refused and counted. A retryable error
    /// ([`crate::Error::is_retryable`]) means "try again later".
    async fn write_logs(&self, batch: LogBatch) -> Result<LogWriteOutcome>;

    /// One page of matching rows, newest first (see the module docs).
    async fn query_logs(&self, query: &LogQuery) -> Result<LogPage>;

    /// Matching lines per step and level, sorted by time then level; buckets
    /// with no line are left out.
    async fn log_rate(&self, query: &LogRateQuery) -> Result<Vec<LogRatePoint>>;

    /// Compaction and retention of logs; called from the store's maintenance
    /// pass. `now_ms` is injectable for tests: records older than
    /// `now_ms - retention` are deleted, and later writes that old refused.
    async fn maintain_logs(&self, now_ms: i64) -> Result<LogMaintenance>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let c = LogCursor {
            timestamp_ns: -5,
            stream_hash: u64::MAX,
            skip: 3,
        };
        assert_eq!(LogCursor::decode(&c.encode()).unwrap(), c);
        for bad in ["", "1_2", "x_00_1", "1_zz_1", "1_00_1_2"] {
            let e = LogCursor::decode(bad).unwrap_err().to_string();
            assert!(e.contains("cursor"), "{e}");
        }
    }

    #[test]
    fn content_hash_sees_every_record_field() {
        let rec = LogRecord {
            timestamp_ns: 1,
            line: "a".into(),
            ..Default::default()
        };
        let batch = LogBatch {
            cluster: "c".into(),
            streams: vec![LogStreamBatch {
                key: LogStreamKey::new("c", "ns", "p", "x"),
                meta: LogStreamMeta::default(),
                records: vec![rec.clone()],
            }],
        };
        let h = batch.content_hash();
        let mut b2 = batch.clone();
        b2.streams[0].meta.node = "other".into();
        assert_eq!(b2.content_hash(), h, "metadata is not content");
        for change in [
            |r: &mut LogRecord| r.timestamp_ns = 2,
            |r: &mut LogRecord| r.line = "b".into(),
            |r: &mut LogRecord| r.partial = true,
            |r: &mut LogRecord| r.level = Some(Level::Error),
            |r: &mut LogRecord| r.fields = Some("{}".into()),
        ] {
            let mut b = batch.clone();
            change(&mut b.streams[0].records[0]);
            assert_ne!(b.content_hash(), h);
        }
        let mut b = batch.clone();
        b.cluster = "d".into();
        assert_ne!(b.content_hash(), h);
    }
}
