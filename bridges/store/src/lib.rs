//! The storage layer's contract: the [`Store`] trait, the codecs every
//! backend shares, the change model, and the conformance suites that every
//! backend passes with the same answers.
//!
//! The backends are their own crates (as `kube-client` is to `kube-core`):
//! - `kube-insight-store-sqlite`: the embedded default, one node
//!   (`sqlite:///path/insight.db`);
//! - `kube-insight-store-cassandra`: scale-out (`cassandra://host:9042/keyspace`).
//!
//! A build that needs only one backend compiles only that one.
//!
//! The trait is split by signal ([`MetricStore`], …) so each signal's
//! contract reads on its own; [`Store`] is the whole.

pub mod change_feed;
pub mod chunk;
pub mod codec;
pub mod entity_tree;
pub mod error;
pub mod event_codec;
pub mod events;
pub mod log_block;
pub mod logs;
pub mod metrics;
pub mod options;
pub mod series_cap;
pub mod topology;
pub mod url;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance_events;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance_logs;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance_topology;

use async_trait::async_trait;
use std::sync::Arc;

pub use error::{Error, Result};
pub use events::{
    ChangeQuery, ChangeRow, EventQuery, EventStore, EventWriteOutcome, LiveObject, ObjectAt,
    ObjectWrite, ObjectWriteOutcome, WatchCheckpoint,
};
pub use logs::{
    LogBatch, LogCursor, LogMaintenance, LogPage, LogQuery, LogRatePoint, LogRateQuery, LogRow,
    LogSelector, LogStore, LogStreamBatch, LogWriteOutcome,
};
pub use metrics::{
    ClusterSeen, EntityQuery, MetricBatch, MetricStore, Resolution, RollupField, SelectQuery,
    SeriesQuery, WriteOutcome,
};
pub use options::{CassandraAuth, Retention, StoreOptions};
pub use topology::{
    DependencyChange, DependencyChangeKind, DependencyQuery, DynTopologyStore, GraphAt,
    SaveOutcome, StatsAt, TopologyCluster, TopologyMaintenance, TopologyStore,
};
pub use url::StoreUrl;

/// What one maintenance pass did (compaction and retention).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// Head windows turned into immutable chunks.
    pub chunks_written: u64,
    /// Samples moved from the head into chunks.
    pub samples_compacted: u64,
    /// Rows (chunks, series, log blocks, …) deleted by retention.
    pub rows_expired: u64,
}

/// Point-in-time statistics for kube-insight's own `/metrics`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct StoreStats {
    /// Active series per cluster (held in the head).
    pub active_series: Vec<(String, u64)>,
    /// Series per cluster that count toward the series cap: written within
    /// the head grace (see [`series_cap`]).
    pub live_series: Vec<(String, u64)>,
    /// The series cap per cluster (`KUBE_INSIGHT_MAX_SERIES`).
    pub series_cap: u64,
    /// Samples held in the head (not yet in chunks).
    pub head_samples: u64,
    /// Bytes on disk, where the backend knows.
    pub disk_bytes: Option<u64>,
}

/// The whole store: every signal, plus schema and maintenance.
#[async_trait]
pub trait Store: MetricStore + Send + Sync + 'static {
    /// `sqlite` or `cassandra`.
    fn backend(&self) -> &'static str;

    /// Cheap liveness check of the backing database (for `/readyz`).
    async fn ping(&self) -> Result<()>;

    /// Creates or migrates the schema; idempotent. Returns the schema version.
    async fn apply_schema(&self) -> Result<u32>;

    /// Checks that the schema is at the version this build needs.
    async fn check_schema(&self) -> Result<u32>;

    /// One maintenance pass: close head windows into chunks, apply retention.
    /// Called periodically by the server; `now_ms` is injectable for tests.
    async fn maintain(&self, now_ms: i64) -> Result<MaintenanceReport>;

    /// Makes everything accepted so far durable and compact where cheap
    /// (graceful shutdown).
    async fn flush(&self) -> Result<()>;

    fn stats(&self) -> StoreStats;

    /// The logs signal of this backend (same database or cluster).
    fn logs(&self) -> Arc<dyn LogStore>;

    /// Events and object history.
    fn events(&self) -> Arc<dyn EventStore>;

    /// Topology snapshots.
    fn topology(&self) -> Arc<dyn TopologyStore>;
}

pub type DynStore = Arc<dyn Store>;
