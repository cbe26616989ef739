//! The `metrics` target's sources: `prometheus_remote_write` (push, the
//! default path) and `prometheus_federate` (pull, the fallback). Both decode
//! with [`crate::prometheus`], apply one label policy ([`transform`]) and
//! write through [`kube_insight_store::MetricStore::write_samples`].

pub mod federate;
pub mod remote_write;
pub mod transform;

pub use federate::{FederateConfig, FederateSource};
pub use remote_write::RemoteWriteSource;

use kube_insight_core::TimeSeries;
use kube_insight_store::{DynStore, MetricBatch, WriteOutcome};
use transform::{LabelPolicy, Transformed};

/// What one ingest (push or pull) of samples did, in the shape both the push
/// mount and the pull loop report.
#[derive(Debug, Default)]
pub struct IngestSummary {
    pub outcome: WriteOutcome,
    pub rejected: Vec<(&'static str, u64)>,
    pub note: Option<String>,
}

/// The shared tail of both metrics paths: label policy, then one durable write.
pub async fn ingest_series(
    store: &DynStore,
    cluster: &str,
    series: Vec<TimeSeries>,
    policy: &LabelPolicy,
    mut rejected: Vec<(&'static str, u64)>,
    mut note: Option<String>,
) -> Result<IngestSummary, kube_insight_store::Error> {
    let Transformed {
        series,
        rejected: policy_rejected,
        note: policy_note,
    } = transform::apply(cluster, series, policy);
    rejected.extend(policy_rejected);
    note = note.or(policy_note);
    let outcome = if series.is_empty() {
        WriteOutcome::default()
    } else {
        store
            .write_samples(MetricBatch {
                cluster: cluster.to_string(),
                series,
            })
            .await?
    };
    if outcome.samples_rejected_limit > 0 {
        rejected.push(("series_limit", outcome.samples_rejected_limit));
        note.get_or_insert_with(|| {
            format!(
                "{} new series refused: the cluster is at its active-series cap (KUBE_INSIGHT_MAX_SERIES)",
                outcome.series_rejected_limit
            )
        });
    }
    if outcome.samples_too_old > 0 {
        rejected.push(("too_old", outcome.samples_too_old));
    }
    Ok(IngestSummary {
        outcome,
        rejected,
        note,
    })
}
