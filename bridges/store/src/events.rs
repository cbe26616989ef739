//! The events and object-change part of the store contract.
//!
//! # Events
//! An event is identified by (cluster, uid). Its row is written once; each
//! new `count` appends an *occurrence* (cluster, uid, count, time), so a
//! repeated event (count++) never rewrites a row, and a re-sent one (watch
//! re-list, kube-eventer re-send, a second replica) is stored once. An event
//! without a uid (kube-eventer's default body) carries a synthetic uid
//! ([`kube_insight_core::event::SYNTHETIC_UID_PREFIX`]) and is dropped when
//! a watched event with the same involved kind, reason and message has an
//! occurrence within a second of it; a watched event arriving later removes
//! such synthetic twins.
//!
//! # Object versions
//! Writes are idempotent on (cluster, uid, resourceVersion). The store
//! computes the patch against the last stored state of the uid, so two
//! collector replicas writing the same stream store each change once and
//! the same patch; a write older than the stored state (by numeric
//! resourceVersion) is stale and ignored, and a write whose sanitized object
//! equals the stored state is "unchanged" and stores no version.
//! [`kube_insight_core::event::ChangeKind::Observed`] versions are baselines
//! (first sight of an existing object) and are left out of the timeline.

use crate::error::Result;
use async_trait::async_trait;
use kube_insight_core::event::{ChangeKind, FieldManager, KubeEvent};
use kube_insight_core::TimeRange;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What an event write did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EventWriteOutcome {
    /// Events seen for the first time.
    pub events_created: u64,
    /// New occurrences (first sightings included).
    pub occurrences_written: u64,
    /// Occurrences already stored (re-sends, replicas, re-lists).
    pub duplicates: u64,
    /// uid-less events matched to a watched event (not stored).
    pub matched_watch: u64,
}

/// One object change to store. `object` is already sanitized
/// ([`kube_insight_core::event::sanitize`]). Serde: the body of the watch
/// push endpoint and the agent's spool (`kube_watch::ingest`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectWrite {
    pub cluster: String,
    /// API group (empty for core).
    pub group: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub resource_version: String,
    /// When the change happened (or was observed).
    pub at_ms: i64,
    /// `Created`, `Updated` (the store finds out whether anything changed),
    /// `Deleted` (the last state), or `Observed` (initial list).
    pub change: ChangeKind,
    pub object: Value,
    /// managedFields of the raw object, to attribute the change.
    pub managers: Vec<FieldManager>,
    /// GitOps provenance ([`kube_insight_core::event::gitops_of`]).
    pub gitops: Option<String>,
    /// The change happened during a watch gap between these times.
    pub gap: Option<(i64, i64)>,
}

/// What an object write did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ObjectWriteOutcome {
    pub versions_written: u64,
    /// Same (cluster, uid, resourceVersion) already stored.
    pub duplicates: u64,
    /// Sanitized object equal to the stored state: no version.
    pub unchanged: u64,
    /// Older than the stored state: ignored.
    pub stale: u64,
}

impl ObjectWriteOutcome {
    pub fn merge(&mut self, o: &ObjectWriteOutcome) {
        self.versions_written += o.versions_written;
        self.duplicates += o.duplicates;
        self.unchanged += o.unchanged;
        self.stale += o.stale;
    }
}

/// `GET /api/v1/events` filters; every given one must match. `kind`/`name`
/// are the involved object's; `kind` in any form ([`kube_insight_core::event::normalize_kind`]).
#[derive(Debug, Clone)]
pub struct EventQuery {
    pub cluster: Option<String>,
    pub namespace: Option<String>,
    pub kind: Option<String>,
    pub name: Option<String>,
    pub reason: Option<String>,
    pub event_type: Option<String>,
    /// Events whose [first, last] time overlaps the range.
    pub range: TimeRange,
    pub limit: usize,
}

/// The changes timeline filters.
#[derive(Debug, Clone)]
pub struct ChangeQuery {
    pub cluster: Option<String>,
    pub namespace: Option<String>,
    /// Workload name: its own versions, its ReplicaSets' and Pods', and
    /// events about them.
    pub workload: Option<String>,
    pub kind: Option<String>,
    pub range: TimeRange,
    pub limit: usize,
    /// Include Kubernetes events in the timeline.
    pub include_events: bool,
    /// Include status-only versions
    /// ([`crate::change_feed::is_status_only`]); left out before the limit
    /// otherwise.
    pub include_status: bool,
}

/// One timeline row, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeRow {
    pub at_ms: i64,
    /// `event`, `object`, `image_digest` or `node`.
    pub category: String,
    /// `created`, `updated`, `deleted` for versions; the event type
    /// (`Normal`, `Warning`) for events.
    pub change: String,
    pub cluster: String,
    pub namespace: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
    pub resource_version: String,
    pub summary: String,
    pub manager: Option<String>,
    pub gitops: Option<String>,
    /// The merge patch from the previous version.
    pub patch: Option<Value>,
    /// Events: reason and count.
    pub reason: Option<String>,
    pub count: Option<u64>,
    /// Deleted or changed during a watch gap that started here.
    pub gap_from_ms: Option<i64>,
}

/// An object as it was at a time.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectAt {
    pub cluster: String,
    pub group: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub resource_version: String,
    /// When this version was stored.
    pub version_ms: i64,
    pub change: ChangeKind,
    pub manager: Option<String>,
    pub object: Value,
}

/// The last stored state of a live (not deleted) object, for reconciliation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveObject {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub resource_version: String,
    pub at_ms: i64,
    pub object: Value,
}

/// Where a kind's watch was last known to be in sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchCheckpoint {
    pub resource_version: String,
    pub at_ms: i64,
}

#[async_trait]
pub trait EventStore: Send + Sync {
    /// The installation's key of the secret hashes ([`kube_insight_core::event::sanitize`]),
    /// made by `schema apply` or the first call and kept in the store.
    async fn secret_key(&self) -> Result<kube_insight_core::event::SecretKey>;

    /// Stores events durably (see the module docs for de-duplication).
    async fn write_events(&self, events: Vec<KubeEvent>) -> Result<EventWriteOutcome>;

    /// Stores object versions durably, in order, in one transaction.
    async fn write_objects(&self, writes: Vec<ObjectWrite>) -> Result<ObjectWriteOutcome>;

    /// Matching events, newest (last occurrence) first, with `count` the
    /// highest count seen and `last_ms` the last occurrence.
    async fn query_events(&self, query: &EventQuery) -> Result<Vec<KubeEvent>>;

    /// The timeline: object versions (not baselines) and, if asked, events,
    /// newest first, at most `limit` rows.
    async fn changes(&self, query: &ChangeQuery) -> Result<Vec<ChangeRow>>;

    /// The object named `kind/namespace/name` as it was at `at_ms` (its
    /// latest version at or before it); `None` if it did not exist then.
    /// `namespace` is empty for cluster-scoped kinds.
    async fn object_at(
        &self,
        cluster: Option<&str>,
        kind: &str,
        namespace: &str,
        name: &str,
        at_ms: i64,
    ) -> Result<Option<ObjectAt>>;

    /// Every live object of a kind in a cluster, with its last stored state.
    async fn live_objects(&self, cluster: &str, group: &str, kind: &str)
        -> Result<Vec<LiveObject>>;

    async fn set_checkpoint(
        &self,
        cluster: &str,
        group: &str,
        kind: &str,
        checkpoint: WatchCheckpoint,
    ) -> Result<()>;

    async fn checkpoint(
        &self,
        cluster: &str,
        group: &str,
        kind: &str,
    ) -> Result<Option<WatchCheckpoint>>;

    /// Retention: events and versions older than `now_ms - retention` are
    /// deleted; the state at the cutoff stays reconstructible. Returns the
    /// rows deleted.
    async fn maintain_events(&self, now_ms: i64) -> Result<u64>;
}
