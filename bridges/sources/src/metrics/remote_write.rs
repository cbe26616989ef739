//! `prometheus_remote_write`: Prometheus remote write 1.0 on
//! `POST /ingest/prometheus/api/v1/write`. Decoding lives in
//! [`crate::prometheus::remote_write`]; this is the wiring.
//!
//! Answers, per the remote-write spec and Prometheus' client: 204 once
//! durable; 400 for a body that can never be decoded (Prometheus drops it);
//! 503 with `Retry-After` when the queue is full or the store cannot take it
//! (Prometheus retries from its WAL; 503 rather than 429 because older
//! Prometheus versions retry 429 only with `retry_on_http_429`). A retried
//! batch is stored once: the store deduplicates on (series, timestamp).

use crate::metrics::{ingest_series, transform::LabelPolicy};
use crate::prometheus::remote_write::{decode, DecodeOptions};
use crate::push::{PushError, PushOutcome, PushRequest, PushSource};
use async_trait::async_trait;
use axum::http::StatusCode;
use kube_insight_store::DynStore;

pub struct RemoteWriteSource {
    store: DynStore,
    policy: LabelPolicy,
    decode: DecodeOptions,
}

impl RemoteWriteSource {
    pub fn new(store: DynStore, policy: LabelPolicy) -> Self {
        RemoteWriteSource {
            store,
            policy,
            decode: DecodeOptions::default(),
        }
    }
}

#[async_trait]
impl PushSource for RemoteWriteSource {
    fn name(&self) -> &'static str {
        "prometheus_remote_write"
    }
    fn target(&self) -> &'static str {
        "metrics"
    }
    fn path(&self) -> &'static str {
        "/ingest/prometheus/api/v1/write"
    }
    fn overload_status(&self) -> StatusCode {
        StatusCode::SERVICE_UNAVAILABLE
    }
    fn own_encodings(&self) -> &'static [&'static str] {
        &["snappy"]
    }

    async fn ingest(&self, req: PushRequest) -> Result<PushOutcome, PushError> {
        let batch =
            decode(&req.body, &self.decode).map_err(|e| PushError::BadRequest(e.to_string()))?;
        let mut rejected = Vec::new();
        if batch.invalid_total > 0 {
            rejected.push(("invalid_series", batch.invalid_samples as u64));
        }
        let note = batch.invalid.first().map(|e| e.to_string());
        let summary = ingest_series(
            &self.store,
            &req.cluster,
            batch.series,
            &self.policy,
            rejected,
            note,
        )
        .await?;
        let refuse = (summary.outcome.series_rejected_limit > 0).then(|| {
            (
                StatusCode::BAD_REQUEST,
                format!(
                    "{} new series refused: the cluster {:?} is at its active-series cap (KUBE_INSIGHT_MAX_SERIES); the other samples were stored",
                    summary.outcome.series_rejected_limit, req.cluster
                ),
            )
        });
        Ok(PushOutcome {
            accepted: summary.outcome.samples_written + summary.outcome.samples_duplicate,
            rejected: summary.rejected,
            note: summary.note,
            refuse,
            json: None,
        })
    }
}
