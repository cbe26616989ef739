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
pub mod topology;

use async_trait::async_trait;
use config::CassandraConfig;
use kube_insight_core::{Entity, Labels, TimeSeries};
use kube_insight_store::error::Result;
use kube_insight_store::metrics::{
    EntityQuery, MetricBatch, MetricStore, SelectQuery, SeriesQuery, WriteOutcome,
};
use kube_insight_store::{MaintenanceReport, Store, StoreOptions, StoreStats};
use session::Db;
use std::sync::Arc;

pub use schema::SCHEMA_VERSION;

/// Opens the store named by a `cassandra://` URL (`KUBE_INSIGHT_STORE`).
/// The keyspace must have been set up by `kube-insight schema apply`
/// ([`open_for_schema_apply`]).
pub async fn open(url: &str, options: StoreOptions) -> Result<kube_insight_store::DynStore> {
    open_with(url, options, false).await
}

/// Opens the store for `kube-insight schema apply`: the keyspace and its
/// tables are created or migrated first, under the schema lock.
pub async fn open_for_schema_apply(
    url: &str,
    options: StoreOptions,
) -> Result<kube_insight_store::DynStore> {
    open_with(url, options, true).await
}

async fn open_with(
    url: &str,
    options: StoreOptions,
    apply: bool,
) -> Result<kube_insight_store::DynStore> {
    match kube_insight_store::StoreUrl::parse(url)? {
        kube_insight_store::StoreUrl::Cassandra {
            hosts,
            keyspace,
            params,
        } => {
            let config = CassandraConfig::from_url(
                url,
                hosts,
                keyspace,
                &params,
                options.cassandra.clone(),
            )?;
            Ok(Arc::new(
                CassandraStore::open(config, options, apply).await?,
            ))
        }
        kube_insight_store::StoreUrl::Sqlite { .. } => Err(kube_insight_store::Error::InvalidUrl {
            url: url.to_string(),
            reason: "not a cassandra:// URL: this is the cassandra backend".to_string(),
        }),
    }
}

/// The cassandra store: one session shared by every signal.
pub struct CassandraStore {
    db: Arc<Db>,
    opts: StoreOptions,
    metrics: metrics::Metrics,
    logs: Arc<dyn kube_insight_store::LogStore>,
    events: Arc<dyn kube_insight_store::EventStore>,
    topology: Arc<dyn kube_insight_store::TopologyStore>,
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
        Ok(CassandraStore {
            metrics: metrics::Metrics::new(db.clone(), opts.clone()),
            logs: Arc::new(logs::CassandraLogStore::new(db.clone(), opts.clone())),
            events: Arc::new(events::CassandraEventStore::new(db.clone(), opts.clone())),
            topology: Arc::new(topology::CassandraTopologyStore::new(db.clone(), &opts)),
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
            .query_unpaged(schema::ddl_statement(&self.db, &cql), ())
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

    async fn clusters(
        &self,
        range: kube_insight_core::TimeRange,
        limit: usize,
    ) -> Result<Vec<kube_insight_store::metrics::ClusterSeen>> {
        self.metrics.clusters_seen(range, limit).await
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
        report.rows_expired += self.logs.maintain_logs(now_ms).await?.rows_expired;
        report.rows_expired += self.events.maintain_events(now_ms).await?;
        report.rows_expired += self.topology.maintain_topology(now_ms).await?.rows_expired;
        Ok(report)
    }

    async fn flush(&self) -> Result<()> {
        self.metrics.flush_index(true).await
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            active_series: self.metrics.active_series(),
            live_series: self.metrics.live_series(),
            series_cap: self.opts.max_series_per_cluster as u64,
            head_samples: 0,
            disk_bytes: None,
        }
    }

    fn logs(&self) -> Arc<dyn kube_insight_store::LogStore> {
        self.logs.clone()
    }

    fn events(&self) -> Arc<dyn kube_insight_store::EventStore> {
        self.events.clone()
    }

    fn topology(&self) -> Arc<dyn kube_insight_store::TopologyStore> {
        self.topology.clone()
    }
}

#[cfg(test)]
mod cql_check;
