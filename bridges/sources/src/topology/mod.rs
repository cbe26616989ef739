//! The `topology` target: every `KUBE_INSIGHT_TOPOLOGY_INTERVAL`, for the
//! configured cluster and every cluster that sent flow or service-graph
//! series in the window, read the last window of flow, service-graph, owner
//! and cAdvisor series of that cluster from the metric store (they arrive
//! through the `metrics` target: remote write or federation), derive the
//! graph with [`kube_insight_core::topology::derive`] and save it with
//! [`kube_insight_store::TopologyStore::save_snapshot`]. One install thus
//! keeps the topology of every cluster that pushes to it.
//! It runs in the shared pull loop ([`crate::pull`]): a failing read or
//! save backs off and is logged once per state change.
//!
//! With leader election ([`crate::leader`]) the source carries the
//! collector's [`Fence`]: it is checked right before each save, and a
//! process that is not (or no longer) the leader refuses to write, so two
//! snapshotters never interleave one cluster's history.

use crate::leader::Fence;
use crate::pull::{PullError, PullSource, PullSummary};
use async_trait::async_trait;
use kube_insight_core::time::now_ms;
use kube_insight_core::topology::{derive, FLOW_METRICS, INPUT_METRICS, SG_FAILED, SG_TOTAL};
use kube_insight_core::{Matcher, TimeRange, TimeSeries};
use kube_insight_store::{DynStore, DynTopologyStore, Resolution, SelectQuery, SeriesQuery};
use std::collections::BTreeSet;
use std::time::Duration;

/// The series whose `cluster` label makes a cluster's topology snapshotted.
const DISCOVERY_METRICS: [&str; 4] = [FLOW_METRICS[0], FLOW_METRICS[1], SG_TOTAL, SG_FAILED];

#[derive(Debug, Clone)]
pub struct TopologyConfig {
    /// The cluster whose topology is always saved (`KUBE_INSIGHT_CLUSTER`);
    /// every other cluster with flow or service-graph series in the window
    /// is snapshotted too.
    pub cluster: String,
    /// At most this many clusters a snapshot round; more fails the round
    /// and names the bound.
    pub max_clusters: usize,
    /// How far back each snapshot looks (traffic "in the window").
    pub window: Duration,
    /// Per metric name: more series than this fails the snapshot (bounded reads).
    pub max_series: usize,
    /// Per metric name: more samples than this fails the snapshot.
    pub max_samples: usize,
}

impl TopologyConfig {
    /// The default window for an interval: four intervals, at least 2 min
    /// (two scrapes of a Prometheus at its default 1 min interval).
    pub fn default_window(interval: Duration) -> Duration {
        (interval * 4).max(Duration::from_secs(120))
    }

    pub fn new(cluster: impl Into<String>, interval: Duration) -> Self {
        TopologyConfig {
            cluster: cluster.into(),
            max_clusters: 1_000,
            window: Self::default_window(interval),
            max_series: 500_000,
            max_samples: 50_000_000,
        }
    }
}

/// One topology snapshot per pull.
pub struct TopologySource {
    metrics: DynStore,
    topology: DynTopologyStore,
    cfg: TopologyConfig,
    /// Checked before each save; `None`: always allowed (no election).
    fence: Option<Fence>,
}

impl TopologySource {
    pub fn new(metrics: DynStore, topology: DynTopologyStore, cfg: TopologyConfig) -> Self {
        TopologySource {
            metrics,
            topology,
            cfg,
            fence: None,
        }
    }

    /// Saves only while `fence` allows it.
    pub fn with_fence(mut self, fence: Fence) -> Self {
        self.fence = Some(fence);
        self
    }

    fn window(&self, at_ms: i64) -> Result<TimeRange, kube_insight_store::Error> {
        let start =
            at_ms.saturating_sub(i64::try_from(self.cfg.window.as_millis()).unwrap_or(i64::MAX));
        Ok(TimeRange::new(start, at_ms)?)
    }

    /// The clusters to snapshot at `at_ms`: the configured one and every
    /// cluster with flow or service-graph series in the window, sorted.
    pub async fn clusters_at(&self, at_ms: i64) -> Result<Vec<String>, PullError> {
        let range = self.window(at_ms)?;
        let mut clusters = BTreeSet::from([self.cfg.cluster.clone()]);
        for name in DISCOVERY_METRICS {
            let q = SeriesQuery {
                matchers: vec![Matcher::eq("__name__", name)],
                range,
                limit: self.cfg.max_series,
            };
            clusters.extend(self.metrics.label_values("cluster", &q).await?);
        }
        if clusters.len() > self.cfg.max_clusters {
            return Err(PullError::Decode {
                url: "topology".into(),
                reason: format!(
                    "{} clusters send flow or service-graph series, more than the bound of {}",
                    clusters.len(),
                    self.cfg.max_clusters
                ),
            });
        }
        Ok(clusters.into_iter().collect())
    }

    /// The input series of `cluster` in the window ending at `at_ms`, one
    /// select per metric name (each bounded on its own).
    pub async fn read_window(
        &self,
        cluster: &str,
        at_ms: i64,
    ) -> Result<Vec<TimeSeries>, kube_insight_store::Error> {
        let range = self.window(at_ms)?;
        let mut out = Vec::new();
        for name in INPUT_METRICS {
            let q = SelectQuery {
                matchers: vec![
                    Matcher::eq("__name__", name),
                    Matcher::eq("cluster", cluster),
                ],
                range,
                max_series: self.cfg.max_series,
                max_samples: self.cfg.max_samples,
                resolution: Resolution::Raw,
            };
            out.extend(self.metrics.select(&q).await?);
        }
        Ok(out)
    }

    /// Derives and saves the snapshot at `at_ms` of every cluster of
    /// [`TopologySource::clusters_at`]. A cluster that fails does not stop
    /// the others; the first failure is the round's answer (logged and
    /// retried by the pull loop).
    pub async fn snapshot_at(&self, at_ms: i64) -> Result<PullSummary, PullError> {
        let mut total = PullSummary::default();
        let mut first_err = None;
        for cluster in self.clusters_at(at_ms).await? {
            match self.snapshot_of(&cluster, at_ms).await {
                Ok(s) => total.accepted += s.accepted,
                // Not leading: no other cluster may be written either.
                Err(e @ PullError::NotLeader { .. }) => return Err(e),
                Err(e) => {
                    tracing::warn!(cluster = %cluster, error = %e, "topology snapshot failed");
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(total),
        }
    }

    /// Derives and saves one cluster's snapshot at `at_ms`.
    async fn snapshot_of(&self, cluster: &str, at_ms: i64) -> Result<PullSummary, PullError> {
        let series = self.read_window(cluster, at_ms).await?;
        let n_series = series.len();
        let snap = tokio::task::spawn_blocking(move || derive(&series))
            .await
            .map_err(|e| PullError::Decode {
                url: "topology".into(),
                reason: format!("deriving the graph failed: {e}"),
            })?;
        let (nodes, edges) = (snap.graph.nodes.len(), snap.graph.edges.len());
        // The fence, as late as possible: leadership may have ended while
        // the window was read and the graph derived.
        let generation = match &self.fence {
            None => None,
            Some(f) => Some(f.check().ok_or_else(|| PullError::NotLeader {
                holder: f.holder().to_string(),
            })?),
        };
        let out = self.topology.save_snapshot(cluster, at_ms, snap).await?;
        if out.structure_changed || out.dependency_changes > 0 {
            tracing::info!(
                cluster = %cluster,
                nodes,
                edges,
                dependency_changes = out.dependency_changes,
                keyframe = out.keyframe,
                generation,
                "topology changed"
            );
        } else {
            tracing::debug!(cluster = %cluster, series = n_series, nodes, edges, "topology unchanged");
        }
        Ok(PullSummary {
            accepted: (nodes + edges) as u64,
            ..Default::default()
        })
    }
}

#[async_trait]
impl PullSource for TopologySource {
    fn name(&self) -> &'static str {
        "topology_snapshot"
    }

    fn target(&self) -> &'static str {
        "topology"
    }

    fn cluster(&self) -> &str {
        &self.cfg.cluster
    }

    async fn pull_once(&self, _timeout: Duration) -> Result<PullSummary, PullError> {
        self.snapshot_at(now_ms()).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use kube_insight_core::{Labels, Sample};
    use kube_insight_store::{MetricBatch, StoreOptions, TopologyStore};
    use kube_insight_store_sqlite::topology::SqliteTopologyStore;
    use kube_insight_store_sqlite::SqliteStore;
    use std::sync::Arc;

    fn flow(cluster: &str, src: &str, dst: &str, t: i64, v: f64) -> TimeSeries {
        TimeSeries::new(
            Labels::from_pairs([
                ("__name__", "beyla_network_flow_bytes_total"),
                ("cluster", cluster),
                ("k8s_src_namespace", "shop"),
                ("k8s_src_owner_name", src),
                ("k8s_src_owner_type", "Deployment"),
                ("k8s_dst_namespace", "shop"),
                ("k8s_dst_owner_name", dst),
                ("k8s_dst_owner_type", "Deployment"),
            ]),
            vec![Sample::new(t, v)],
        )
    }

    /// A metric store and a topology store in one fresh SQLite file.
    async fn stores() -> (tempfile::TempDir, DynStore, Arc<SqliteTopologyStore>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("insight.db");
        let metrics: DynStore = Arc::new(
            SqliteStore::open(&path, StoreOptions::default())
                .await
                .unwrap(),
        );
        let topo = Arc::new(
            SqliteTopologyStore::open(&path, StoreOptions::default())
                .await
                .unwrap(),
        );
        (dir, metrics, topo)
    }

    #[tokio::test]
    async fn snapshots_come_from_the_window_of_stored_series() {
        let (_dir, metrics, topo) = stores().await;
        let now = now_ms() / 1000 * 1000;
        let mut series = Vec::new();
        for k in 0..5 {
            let t = now - 60_000 + k * 15_000;
            series.push(flow("prod", "web", "api", t, 1000.0 * k as f64));
            // Idle: the same value all along.
            series.push(flow("prod", "api", "db", t, 50.0));
            // Another cluster's series are its own topology, not prod's.
            series.push(flow("other", "x", "y", t, 1000.0 * k as f64));
        }
        metrics
            .write_samples(MetricBatch {
                cluster: "prod".into(),
                series,
            })
            .await
            .unwrap();
        let mut cfg = TopologyConfig::new("prod", Duration::from_secs(15));
        cfg.window = Duration::from_secs(90);
        let src = TopologySource::new(metrics, topo.clone(), cfg);
        assert_eq!(src.clusters_at(now).await.unwrap(), ["other", "prod"]);
        let s = src.snapshot_at(now).await.unwrap();
        assert_eq!(s.accepted, 6, "two workloads and one edge in each cluster");
        let g = topo.graph_at("prod", now).await.unwrap().unwrap();
        let edges: Vec<&str> = g.graph.edges.keys().map(|k| k.as_str()).collect();
        assert_eq!(edges, ["shop/api--shop/web"]);
        let st = topo.stats_at("prod", now).await.unwrap().unwrap();
        let b = st.stats.edges["shop/api--shop/web"].bytes_per_s.unwrap();
        assert!((b - 4000.0 / 60.0).abs() < 1.0, "{b}");
        let other = topo.graph_at("other", now).await.unwrap().unwrap();
        let edges: Vec<&str> = other.graph.edges.keys().map(|k| k.as_str()).collect();
        assert_eq!(edges, ["shop/x--shop/y"]);
    }

    #[tokio::test]
    async fn the_cluster_bound_is_named() {
        let (_dir, metrics, topo) = stores().await;
        let now = now_ms() / 1000 * 1000;
        let series = (0..5)
            .map(|c| flow(&format!("c{c}"), "web", "api", now - 10_000, 1.0))
            .collect();
        metrics
            .write_samples(MetricBatch {
                cluster: "prod".into(),
                series,
            })
            .await
            .unwrap();
        let mut cfg = TopologyConfig::new("prod", Duration::from_secs(15));
        cfg.max_clusters = 3;
        let src = TopologySource::new(metrics, topo.clone(), cfg);
        let e = src.snapshot_at(now).await.unwrap_err().to_string();
        assert!(e.contains("6 clusters") && e.contains("bound of 3"), "{e}");
        assert!(topo.graph_at("prod", now).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_process_that_does_not_lead_saves_no_snapshot() {
        let (_dir, metrics, topo) = stores().await;
        let now = now_ms() / 1000 * 1000;
        let series = (0..3)
            .map(|k| {
                flow(
                    "prod",
                    "web",
                    "api",
                    now - 30_000 + k * 15_000,
                    1000.0 * k as f64,
                )
            })
            .collect();
        metrics
            .write_samples(MetricBatch {
                cluster: "prod".into(),
                series,
            })
            .await
            .unwrap();
        let fence = Fence::new("collector-1");
        let src = TopologySource::new(
            metrics,
            topo.clone(),
            TopologyConfig::new("prod", Duration::from_secs(15)),
        )
        .with_fence(fence.clone());
        let e = src.snapshot_at(now).await.unwrap_err();
        assert_eq!(e.kind(), "not_leader", "{e}");
        assert!(e.to_string().contains("collector-1"), "{e}");
        assert!(topo.graph_at("prod", now).await.unwrap().is_none());
        // Leading (generation 3): saved.
        fence.grant(3, fence.now_ms() + 60_000);
        src.snapshot_at(now).await.unwrap();
        assert!(topo.graph_at("prod", now).await.unwrap().is_some());
        // The fence's deadline passed: refused again.
        fence.grant(3, 0);
        let e = src.snapshot_at(now + 1000).await.unwrap_err();
        assert_eq!(e.kind(), "not_leader");
    }
}
