//! The write plan of the metrics path: the CQL requests one accepted write
//! becomes. Building it is pure, so its shape (requests, statements per
//! request, partitions per batch, bytes per request) is asserted by tests
//! without a server; [`Db::send`](crate::session::Db::send) only executes
//! it.
//!
//! Every request is one partition: a single statement, or an unlogged batch
//! of statements into that partition whose size, as Cassandra measures it
//! for `batch_size_warn_threshold` (5 KiB: the partition update's data
//! size, see [`Bound::batch_size`]), stays under [`MAX_BATCH_BYTES`]. Rows of
//! different partitions are never batched together: a multi-partition
//! unlogged batch makes its coordinator a bottleneck.

use crate::session::{Statement, MAX_BATCH_BYTES};
use scylla::serialize::row::{RowSerializationContext, SerializeRow};
use scylla::serialize::writers::RowWriter;
use scylla::serialize::SerializationError;
use std::collections::BTreeMap;
use std::sync::Arc;

pub const HEAD_W: &str =
    "INSERT INTO metrics_head (cluster, shard, bucket, fp, ts, value) VALUES (?, ?, ?, ?, ?, ?)";
pub const LATE_W: &str = "INSERT INTO metrics_late (cluster, fp, day, window_start, ts, value) VALUES (?, ?, ?, ?, ?, ?) USING TTL ?";
pub const MARK_W: &str =
    "INSERT INTO metrics_pending (cluster, day, window_start, shard, fp) VALUES (?, ?, ?, ?, ?)";
pub const NAME_W: &str = "INSERT INTO metrics_names (cluster, day, metric) VALUES (?, ?, ?)";
pub const CLUSTER_W: &str = "INSERT INTO clusters (day, cluster) VALUES (?, ?)";
/// A series' first index row of a day: its labels and `last_ms`, at the
/// write time of `last_ms` (the labels of a fingerprint never change, and
/// retention deletes are above every write time).
pub const INDEX_NEW_W: &str = "UPDATE metrics_series USING TTL ? AND TIMESTAMP ? SET labels = ?, last_ms = ? WHERE cluster = ? AND day = ? AND metric = ? AND fp = ?";
pub const INDEX_FIRST_W: &str = "UPDATE metrics_series USING TTL ? AND TIMESTAMP ? SET first_ms = ? WHERE cluster = ? AND day = ? AND metric = ? AND fp = ?";
pub const INDEX_LAST_W: &str = "UPDATE metrics_series USING TTL ? AND TIMESTAMP ? SET last_ms = ? WHERE cluster = ? AND day = ? AND metric = ? AND fp = ?";

/// The partition a statement writes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Partition {
    /// `metrics_head (cluster, shard, bucket)`.
    Head(Arc<str>, i32, i64),
    /// `metrics_late (cluster, fp, day)`.
    Late(Arc<str>, i64, i32),
    /// `metrics_pending (cluster, day)`.
    Pending(Arc<str>, i32),
    /// `metrics_names (cluster, day)`.
    Names(Arc<str>, i32),
    /// `clusters (day)`.
    Clusters(i32),
    /// `metrics_series (cluster, day, metric)`.
    Series(Arc<str>, i32, Arc<str>),
}

/// One statement with its bound values.
#[derive(Debug, Clone, PartialEq)]
pub enum Bound {
    Head {
        cluster: Arc<str>,
        shard: i32,
        bucket: i64,
        fp: i64,
        ts: i64,
        /// The value's bits (`f64::to_bits`).
        value: i64,
    },
    Late {
        cluster: Arc<str>,
        fp: i64,
        day: i32,
        window_start: i64,
        ts: i64,
        value: i64,
        ttl: i32,
    },
    Mark {
        cluster: Arc<str>,
        day: i32,
        window_start: i64,
        shard: i32,
        fp: i64,
    },
    Name {
        cluster: Arc<str>,
        day: i32,
        metric: Arc<str>,
    },
    Cluster {
        day: i32,
        cluster: Arc<str>,
    },
    /// `labels` and `last_ms` of a series' first row of the day.
    IndexNew {
        key: IndexKey,
        ttl: i32,
        at_us: i64,
        labels: Arc<[u8]>,
        last: i64,
    },
    IndexFirst {
        key: IndexKey,
        ttl: i32,
        at_us: i64,
        first: i64,
    },
    IndexLast {
        key: IndexKey,
        ttl: i32,
        at_us: i64,
        last: i64,
    },
}

/// The row of a series in the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexKey {
    pub cluster: Arc<str>,
    pub day: i32,
    pub metric: Arc<str>,
    pub fp: i64,
}

/// Bytes of one bound value in a request: its 4-byte length and payload.
#[cfg(test)]
const fn val(payload: usize) -> usize {
    4 + payload
}

impl Bound {
    pub fn partition(&self) -> Partition {
        match self {
            Bound::Head {
                cluster,
                shard,
                bucket,
                ..
            } => Partition::Head(cluster.clone(), *shard, *bucket),
            Bound::Late {
                cluster, fp, day, ..
            } => Partition::Late(cluster.clone(), *fp, *day),
            Bound::Mark { cluster, day, .. } => Partition::Pending(cluster.clone(), *day),
            Bound::Name { cluster, day, .. } => Partition::Names(cluster.clone(), *day),
            Bound::Cluster { day, .. } => Partition::Clusters(*day),
            Bound::IndexNew { key, .. }
            | Bound::IndexFirst { key, .. }
            | Bound::IndexLast { key, .. } => {
                Partition::Series(key.cluster.clone(), key.day, key.metric.clone())
            }
        }
    }

    /// This statement's share of a batch's size as Cassandra measures it
    /// against `batch_size_warn_threshold` (an estimate from above of the
    /// partition update's data size): the clustering values, 8 bytes of row
    /// liveness for an INSERT, and per written cell 16 bytes (timestamp,
    /// TTL, deletion time) plus its value. The partition key is not part of
    /// it: a batch into one partition carries it once.
    pub fn batch_size(&self) -> usize {
        const CELL: usize = 16;
        const LIVENESS: usize = 8;
        match self {
            // clustering (fp, ts), the value cell
            Bound::Head { .. } => 16 + LIVENESS + CELL + 8,
            // clustering (window_start, ts), the value cell; TTL'd liveness
            Bound::Late { .. } => 16 + LIVENESS + 8 + CELL + 8,
            // clustering (window_start, shard, fp), no regular cell
            Bound::Mark { .. } => 20 + LIVENESS,
            Bound::Name { metric, .. } => metric.len() + LIVENESS,
            Bound::Cluster { cluster, .. } => cluster.len() + LIVENESS,
            // clustering fp, cells labels and last_ms (an UPDATE: no liveness)
            Bound::IndexNew { labels, .. } => 8 + CELL + labels.len() + CELL + 8,
            Bound::IndexFirst { .. } | Bound::IndexLast { .. } => 8 + CELL + 8,
        }
    }

    /// Bytes of the bound values, as the CQL protocol carries them (each a
    /// 4-byte length and its payload; statement ids and frame headers not
    /// counted).
    #[cfg(test)]
    pub fn wire_bytes(&self) -> usize {
        let key = |k: &IndexKey| val(k.cluster.len()) + val(4) + val(k.metric.len()) + val(8);
        match self {
            Bound::Head { cluster, .. } => val(cluster.len()) + val(4) + 4 * val(8),
            Bound::Late { cluster, .. } => val(cluster.len()) + 2 * val(4) + 4 * val(8),
            Bound::Mark { cluster, .. } => val(cluster.len()) + 2 * val(4) + 2 * val(8),
            Bound::Name {
                cluster, metric, ..
            } => val(cluster.len()) + val(4) + val(metric.len()),
            Bound::Cluster { cluster, .. } => val(4) + val(cluster.len()),
            Bound::IndexNew { key: k, labels, .. } => {
                key(k) + val(4) + val(8) + val(labels.len()) + val(8)
            }
            Bound::IndexFirst { key: k, .. } | Bound::IndexLast { key: k, .. } => {
                key(k) + val(4) + 2 * val(8)
            }
        }
    }

    /// Samples this statement stores (head and late rows).
    #[cfg(test)]
    pub fn samples(&self) -> usize {
        usize::from(matches!(self, Bound::Head { .. } | Bound::Late { .. }))
    }
}

impl Statement for Bound {
    fn cql(&self) -> &'static str {
        match self {
            Bound::Head { .. } => HEAD_W,
            Bound::Late { .. } => LATE_W,
            Bound::Mark { .. } => MARK_W,
            Bound::Name { .. } => NAME_W,
            Bound::Cluster { .. } => CLUSTER_W,
            Bound::IndexNew { .. } => INDEX_NEW_W,
            Bound::IndexFirst { .. } => INDEX_FIRST_W,
            Bound::IndexLast { .. } => INDEX_LAST_W,
        }
    }
}

impl SerializeRow for Bound {
    fn serialize(
        &self,
        ctx: &RowSerializationContext<'_>,
        writer: &mut RowWriter,
    ) -> Result<(), SerializationError> {
        match self {
            Bound::Head {
                cluster,
                shard,
                bucket,
                fp,
                ts,
                value,
            } => (&**cluster, shard, bucket, fp, ts, value).serialize(ctx, writer),
            Bound::Late {
                cluster,
                fp,
                day,
                window_start,
                ts,
                value,
                ttl,
            } => (&**cluster, fp, day, window_start, ts, value, ttl).serialize(ctx, writer),
            Bound::Mark {
                cluster,
                day,
                window_start,
                shard,
                fp,
            } => (&**cluster, day, window_start, shard, fp).serialize(ctx, writer),
            Bound::Name {
                cluster,
                day,
                metric,
            } => (&**cluster, day, &**metric).serialize(ctx, writer),
            Bound::Cluster { day, cluster } => (day, &**cluster).serialize(ctx, writer),
            Bound::IndexNew {
                key,
                ttl,
                at_us,
                labels,
                last,
            } => (
                ttl,
                at_us,
                &**labels,
                last,
                &*key.cluster,
                key.day,
                &*key.metric,
                key.fp,
            )
                .serialize(ctx, writer),
            Bound::IndexFirst {
                key,
                ttl,
                at_us,
                first: v,
            }
            | Bound::IndexLast {
                key,
                ttl,
                at_us,
                last: v,
            } => {
                (ttl, at_us, v, &*key.cluster, key.day, &*key.metric, key.fp).serialize(ctx, writer)
            }
        }
    }

    fn is_empty(&self) -> bool {
        false
    }
}

/// One CQL request: statements into one partition.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub rows: Vec<Bound>,
}

impl Request {
    /// Bound-value bytes sent.
    #[cfg(test)]
    pub fn wire_bytes(&self) -> usize {
        self.rows.iter().map(Bound::wire_bytes).sum()
    }

    /// The batch's size as Cassandra measures it ([`Bound::batch_size`]).
    #[cfg(test)]
    pub fn batch_size(&self) -> usize {
        self.rows.iter().map(Bound::batch_size).sum()
    }

    #[cfg(test)]
    pub fn samples(&self) -> usize {
        self.rows.iter().map(Bound::samples).sum()
    }
}

/// Groups statements by partition (in partition order, statements in the
/// order given) into requests of a batch size ([`Bound::batch_size`]) of at
/// most [`MAX_BATCH_BYTES`] each.
pub fn requests(rows: impl IntoIterator<Item = Bound>) -> Vec<Request> {
    let mut by: BTreeMap<Partition, Vec<Bound>> = BTreeMap::new();
    for r in rows {
        by.entry(r.partition()).or_default().push(r);
    }
    let mut out = Vec::new();
    for (_, rows) in by {
        let mut cur = Request { rows: Vec::new() };
        let mut bytes = 0;
        for r in rows {
            let b = r.batch_size();
            if !cur.rows.is_empty() && bytes + b > MAX_BATCH_BYTES {
                out.push(std::mem::replace(&mut cur, Request { rows: Vec::new() }));
                bytes = 0;
            }
            bytes += b;
            cur.rows.push(r);
        }
        if !cur.rows.is_empty() {
            out.push(cur);
        }
    }
    out
}

/// What a plan sends, as the recording layer of the tests counts it.
#[cfg(test)]
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PlanStats {
    /// CQL requests (a batch counts once).
    pub requests: usize,
    /// Statements in all requests.
    pub statements: usize,
    /// Requests that write samples (head or late rows).
    pub sample_requests: usize,
    pub samples: usize,
    /// The most partitions one request touches (1 by construction).
    pub max_partitions_per_request: usize,
    /// The largest batch size of a request ([`Bound::batch_size`]).
    pub max_batch_size: usize,
    /// The most bound-value bytes of one request, and of all.
    pub max_wire_bytes: usize,
    pub wire_bytes: usize,
}

#[cfg(test)]
impl PlanStats {
    /// Adds a plan's requests.
    pub fn record(&mut self, plan: &[Request]) {
        for r in plan {
            self.requests += 1;
            self.statements += r.rows.len();
            let s = r.samples();
            self.samples += s;
            self.sample_requests += usize::from(s > 0);
            let mut parts: Vec<Partition> = r.rows.iter().map(Bound::partition).collect();
            parts.sort();
            parts.dedup();
            self.max_partitions_per_request = self.max_partitions_per_request.max(parts.len());
            self.max_batch_size = self.max_batch_size.max(r.batch_size());
            let b = r.wire_bytes();
            self.max_wire_bytes = self.max_wire_bytes.max(b);
            self.wire_bytes += b;
        }
    }

    /// Samples per CQL request of the whole plan.
    pub fn samples_per_request(&self) -> f64 {
        self.samples as f64 / self.requests.max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(shard: i32, fp: i64) -> Bound {
        Bound::Head {
            cluster: Arc::from("prod"),
            shard,
            bucket: 0,
            fp,
            ts: 1,
            value: 0,
        }
    }

    #[test]
    fn requests_hold_one_partition_under_the_byte_bound() {
        let rows: Vec<Bound> = (0..500).map(|i| head((i % 2) as i32, i)).collect();
        let plan = requests(rows);
        let mut stats = PlanStats::default();
        stats.record(&plan);
        assert_eq!(stats.max_partitions_per_request, 1);
        assert!(stats.max_batch_size <= MAX_BATCH_BYTES, "{stats:?}");
        assert_eq!(stats.samples, 500);
        // 48 bytes a row: 85 rows a request, 250 rows a shard → 3 each.
        assert_eq!(head(0, 0).batch_size(), 48);
        assert_eq!(head(0, 0).wire_bytes(), 4 + 4 + 4 + 4 + 4 * 12);
        assert_eq!(stats.requests, 6, "{stats:?}");
        assert_eq!(stats.wire_bytes, 500 * 64);
    }

    #[test]
    fn a_row_over_the_bound_is_a_request_of_its_own() {
        let big = |fp| Bound::IndexNew {
            key: IndexKey {
                cluster: Arc::from("c"),
                day: 1,
                metric: Arc::from("m"),
                fp,
            },
            ttl: 1,
            at_us: 1,
            labels: Arc::from(vec![0u8; MAX_BATCH_BYTES * 2]),
            last: 1,
        };
        let plan = requests([big(1), big(2)]);
        assert_eq!(plan.len(), 2);
        assert_eq!(plan[0].rows.len(), 1);
    }
}
