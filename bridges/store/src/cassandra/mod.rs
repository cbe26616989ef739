//! The cassandra backend (`cassandra://host1:9042,host2:9042/keyspace?dc=DC&consistency=local_quorum`):
//! scale-out storage with the same answers as the embedded store.
//!
//! - [`session`]: the one driver session (token- and DC-aware, prepared
//!   statements, bounded in-flight requests, error mapping).
//! - [`schema`]: the versioned CQL schema, applied under a lock.
//! - [`metrics`]: head table + immutable chunks (the design notes are there).
//!
//! Every statement is prepared and idempotent; batches are unlogged and
//! hold one partition only; every table has one TTL.

pub mod config;
pub mod events;
pub mod logs;
pub mod metrics;
pub mod schema;
pub mod session;

use crate::error::{Error, Result};
use crate::metrics::{
    EntityQuery, MetricBatch, MetricStore, SelectQuery, SeriesQuery, WriteOutcome,
};
use crate::{MaintenanceReport, Store, StoreOptions, StoreStats};
use async_trait::async_trait;
use config::CassandraConfig;
use kube_insight_core::{Entity, Labels, TimeSeries};
use session::Db;
use std::sync::Arc;

pub use schema::SCHEMA_VERSION;

/// The cassandra store: one session shared by every signal.
pub struct CassandraStore {
    db: Arc<Db>,
    opts: StoreOptions,
    metrics: metrics::Metrics,
    logs: Arc<dyn crate::LogStore>,
    events: Arc<dyn crate::EventStore>,
    topology: Arc<dyn crate::TopologyStore>,
}

impl CassandraStore {
    /// Connects. With `apply_schema`, creates the keyspace and tables
    /// first (`kube-insight schema apply`); otherwise the keyspace must
    /// exist and its schema version must match.
    pub async fn open(
        config: CassandraConfig,
        opts: StoreOptions,
        apply_schema: bool,
    ) -> Result<CassandraStore> {
        let hosts = config.hosts.join(",");
        let keyspace = config.keyspace.clone();
        let db = Arc::new(Db::connect(config).await?);
        if apply_schema {
            schema::apply(&db, &opts).await?;
        } else {
            db.use_keyspace().await?;
            schema::check(&db).await?;
        }
        tracing::info!(hosts = %hosts, keyspace = %keyspace, "cassandra store open");
        let unbuilt = |signal: &'static str| Arc::new(Unbuilt(signal));
        Ok(CassandraStore {
            metrics: metrics::Metrics::new(db.clone(), opts.clone()),
            logs: Arc::new(logs::CassandraLogStore::new(db.clone(), opts.clone())),
            events: Arc::new(events::CassandraEventStore::new(db.clone(), opts.clone())),
            topology: unbuilt("topology"),
            db,
            opts,
        })
    }

    /// CQL requests sent so far: (writes, reads); a batch counts once.
    pub fn cql_requests(&self) -> (u64, u64) {
        self.db.counts.get()
    }

    /// The keyspace, for tests that drop it afterwards.
    pub fn keyspace(&self) -> &str {
        &self.db.config.keyspace
    }

    /// Drops the keyspace (tests).
    pub async fn drop_keyspace(&self) -> Result<()> {
        let cql = format!("DROP KEYSPACE IF EXISTS {}", self.db.config.keyspace);
        self.db
            .session
            .query_unpaged(cql.as_str(), ())
            .await
            .map_err(|e| session::map_err(&cql, e))?;
        Ok(())
    }
}

#[async_trait]
impl MetricStore for CassandraStore {
    async fn write_samples(&self, batch: MetricBatch) -> Result<WriteOutcome> {
        self.metrics.write(batch).await
    }

    async fn select(&self, query: &SelectQuery) -> Result<Vec<TimeSeries>> {
        self.metrics.select(query).await
    }

    async fn series(&self, query: &SeriesQuery) -> Result<Vec<Labels>> {
        self.metrics.series(query).await
    }

    async fn label_names(&self, query: &SeriesQuery) -> Result<Vec<String>> {
        self.metrics.label_names(query).await
    }

    async fn label_values(&self, name: &str, query: &SeriesQuery) -> Result<Vec<String>> {
        self.metrics.label_values(name, query).await
    }

    async fn entities(&self, query: &EntityQuery) -> Result<Vec<Entity>> {
        self.metrics.entities(query).await
    }
}

#[async_trait]
impl Store for CassandraStore {
    fn backend(&self) -> &'static str {
        "cassandra"
    }

    async fn ping(&self) -> Result<()> {
        const Q: &str = "SELECT release_version FROM system.local";
        self.db.exec(Q, ()).await.map(|_| ())
    }

    async fn apply_schema(&self) -> Result<u32> {
        schema::apply(&self.db, &self.opts).await.map(|v| v as u32)
    }

    async fn check_schema(&self) -> Result<u32> {
        schema::check(&self.db).await.map(|v| v as u32)
    }

    async fn maintain(&self, now_ms: i64) -> Result<MaintenanceReport> {
        let mut report = self.metrics.maintain(now_ms).await?;
        for (signal, r) in [
            (
                "logs",
                self.logs
                    .maintain_logs(now_ms)
                    .await
                    .map(|m| m.rows_expired),
            ),
            ("events", self.events.maintain_events(now_ms).await),
            (
                "topology",
                self.topology
                    .maintain_topology(now_ms)
                    .await
                    .map(|m| m.rows_expired),
            ),
        ] {
            match r {
                Ok(n) => report.rows_expired += n,
                Err(Error::Cassandra(why)) if why.contains("not built yet") => {
                    tracing::debug!(signal, "no cassandra maintenance: {why}");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(report)
    }

    async fn flush(&self) -> Result<()> {
        self.metrics.flush_index(true).await
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            active_series: self.metrics.active_series(),
            head_samples: 0,
            disk_bytes: None,
        }
    }

    fn logs(&self) -> Arc<dyn crate::LogStore> {
        self.logs.clone()
    }

    fn events(&self) -> Arc<dyn crate::EventStore> {
        self.events.clone()
    }

    fn topology(&self) -> Arc<dyn crate::TopologyStore> {
        self.topology.clone()
    }
}

/// A signal this backend does not store yet: every call says so.
struct Unbuilt(&'static str);

impl Unbuilt {
    fn err<T>(&self) -> Result<T> {
        Err(Error::Cassandra(format!(
            "the cassandra backend does not store {} yet (not built yet); use sqlite:// for this signal's target",
            self.0
        )))
    }
}

#[async_trait]
impl crate::LogStore for Unbuilt {
    async fn write_logs(&self, _: crate::LogBatch) -> Result<crate::LogWriteOutcome> {
        self.err()
    }
    async fn query_logs(&self, _: &crate::LogQuery) -> Result<crate::LogPage> {
        self.err()
    }
    async fn log_rate(&self, _: &crate::LogRateQuery) -> Result<Vec<crate::LogRatePoint>> {
        self.err()
    }
    async fn maintain_logs(&self, _: i64) -> Result<crate::LogMaintenance> {
        self.err()
    }
}

#[async_trait]
impl crate::EventStore for Unbuilt {
    async fn write_events(
        &self,
        _: Vec<kube_insight_core::event::KubeEvent>,
    ) -> Result<crate::EventWriteOutcome> {
        self.err()
    }
    async fn write_objects(&self, _: Vec<crate::ObjectWrite>) -> Result<crate::ObjectWriteOutcome> {
        self.err()
    }
    async fn query_events(
        &self,
        _: &crate::EventQuery,
    ) -> Result<Vec<kube_insight_core::event::KubeEvent>> {
        self.err()
    }
    async fn changes(&self, _: &crate::ChangeQuery) -> Result<Vec<crate::ChangeRow>> {
        self.err()
    }
    async fn object_at(
        &self,
        _: Option<&str>,
        _: &str,
        _: &str,
        _: &str,
        _: i64,
    ) -> Result<Option<crate::ObjectAt>> {
        self.err()
    }
    async fn live_objects(&self, _: &str, _: &str, _: &str) -> Result<Vec<crate::LiveObject>> {
        self.err()
    }
    async fn set_checkpoint(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: crate::WatchCheckpoint,
    ) -> Result<()> {
        self.err()
    }
    async fn checkpoint(
        &self,
        _: &str,
        _: &str,
        _: &str,
    ) -> Result<Option<crate::WatchCheckpoint>> {
        self.err()
    }
    async fn maintain_events(&self, _: i64) -> Result<u64> {
        self.err()
    }
}

#[async_trait]
impl crate::TopologyStore for Unbuilt {
    async fn save_snapshot(
        &self,
        _: &str,
        _: i64,
        _: kube_insight_core::topology::Snapshot,
    ) -> Result<crate::SaveOutcome> {
        self.err()
    }
    async fn graph_at(&self, _: &str, _: i64) -> Result<Option<crate::GraphAt>> {
        self.err()
    }
    async fn stats_at(&self, _: &str, _: i64) -> Result<Option<crate::StatsAt>> {
        self.err()
    }
    async fn dependency_changes(
        &self,
        _: &crate::DependencyQuery,
    ) -> Result<Vec<crate::DependencyChange>> {
        self.err()
    }
    async fn topology_clusters(&self) -> Result<Vec<crate::TopologyCluster>> {
        self.err()
    }
    async fn maintain_topology(&self, _: i64) -> Result<crate::TopologyMaintenance> {
        self.err()
    }
}
