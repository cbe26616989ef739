//! The metrics part of the store contract.

use crate::error::Result;
use async_trait::async_trait;
pub use kube_insight_core::rollup::{Resolution, RollupField};
use kube_insight_core::{Entity, Labels, Matcher, TimeRange, TimeSeries};

/// Samples to store for one cluster. Every series' labels already carry the
/// `cluster` label (set by the ingest layer from the bearer token) and
/// `__name__`; each series' samples are sorted by timestamp.
#[derive(Debug, Clone, Default)]
pub struct MetricBatch {
    pub cluster: String,
    pub series: Vec<TimeSeries>,
}

/// What a write did. A write that returns `Ok` is durable.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriteOutcome {
    /// New samples stored.
    pub samples_written: u64,
    /// Samples already stored (same series, same timestamp): kept once.
    pub samples_duplicate: u64,
    /// Series seen for the first time.
    pub series_created: u64,
    /// New series refused because the cluster is at its active-series cap.
    pub series_rejected_limit: u64,
    /// Samples of those refused series.
    pub samples_rejected_limit: u64,
    /// Samples older than retention, refused.
    pub samples_too_old: u64,
}

impl WriteOutcome {
    pub fn merge(&mut self, o: &WriteOutcome) {
        self.samples_written += o.samples_written;
        self.samples_duplicate += o.samples_duplicate;
        self.series_created += o.series_created;
        self.series_rejected_limit += o.series_rejected_limit;
        self.samples_rejected_limit += o.samples_rejected_limit;
        self.samples_too_old += o.samples_too_old;
    }
}

/// Series lookup: all matchers must match (AND), and the series must have
/// data overlapping `range`. Callers union several selectors themselves.
#[derive(Debug, Clone)]
pub struct SeriesQuery {
    pub matchers: Vec<Matcher>,
    pub range: TimeRange,
    /// At most this many series; more is [`crate::Error::LimitExceeded`].
    pub limit: usize,
}

/// Sample read for matching series.
#[derive(Debug, Clone)]
pub struct SelectQuery {
    pub matchers: Vec<Matcher>,
    pub range: TimeRange,
    /// More matching series than this is [`crate::Error::LimitExceeded`].
    pub max_series: usize,
    /// More samples in total than this is [`crate::Error::LimitExceeded`].
    pub max_samples: usize,
    pub resolution: Resolution,
}

/// A cluster with metrics in a range, and what the backend knows of it
/// cheaply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSeen {
    pub cluster: String,
    /// The newest sample of the cluster's series, where the backend holds
    /// it in memory (SQLite's head); `None` otherwise.
    pub last_seen_ms: Option<i64>,
    /// Series of the cluster with data in the range, where known.
    pub series: Option<u64>,
}

/// Entity tree lookup.
#[derive(Debug, Clone)]
pub struct EntityQuery {
    pub cluster: Option<String>,
    pub namespace: Option<String>,
    pub range: TimeRange,
    pub limit: usize,
}

#[async_trait]
pub trait MetricStore: Send + Sync {
    /// Stores samples durably. A sample whose series and timestamp are already
    /// stored is counted as a duplicate and kept once (retries and federation
    /// re-sends are idempotent). Stale markers ([`kube_insight_core::STALE_NAN`])
    /// are stored as markers. Returns `Err` with a retryable error when the
    /// store cannot take the batch now; then nothing of it is visible.
    async fn write_samples(&self, batch: MetricBatch) -> Result<WriteOutcome>;

    /// Samples of every matching series within `range`, sorted by timestamp,
    /// one per timestamp, stale markers included. Series are sorted by labels.
    async fn select(&self, query: &SelectQuery) -> Result<Vec<TimeSeries>>;

    /// Label sets of matching series with data in the range, sorted.
    async fn series(&self, query: &SeriesQuery) -> Result<Vec<Labels>>;

    /// Label names used by matching series (all series when no matcher), sorted.
    async fn label_names(&self, query: &SeriesQuery) -> Result<Vec<String>>;

    /// Values of one label among matching series, sorted, non-empty.
    async fn label_values(&self, name: &str, query: &SeriesQuery) -> Result<Vec<String>>;

    /// The cluster / namespace / workload / pod / container tree seen in the
    /// range, from series labels and kube-state-metrics owner facts.
    async fn entities(&self, query: &EntityQuery) -> Result<Vec<Entity>>;

    /// The clusters with series overlapping `range`, by name; never a read
    /// of the series themselves where the backend keeps a cluster index.
    /// More than `limit` clusters is [`crate::Error::LimitExceeded`].
    async fn clusters(&self, range: TimeRange, limit: usize) -> Result<Vec<ClusterSeen>>;
}
