//! `prometheus_federate`: pulls `GET <prometheus>/federate?match[]=…` every
//! `KUBE_INSIGHT_METRICS_INTERVAL` (the fallback when only read access to a
//! Prometheus is possible). Federation returns only the latest sample of each
//! series, so an outage of the puller is a gap; re-sent samples (same
//! timestamp on the next pull) are stored once.
//!
//! A body that fails mid-transfer stores nothing; malformed lines are skipped
//! and counted, their neighbours are stored; a final line cut short is
//! dropped, never stored half-parsed.

use crate::metrics::{ingest_series, transform::LabelPolicy};
use crate::prometheus::exposition::{parse, SeriesCollector};
use crate::pull::{PullError, PullSource, PullSummary};
use async_trait::async_trait;
use kube_insight_store::DynStore;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct FederateConfig {
    /// Base URL of the Prometheus (`http://prometheus:9090`, path prefixes kept).
    pub base_url: String,
    /// `match[]` selectors.
    pub matchers: Vec<String>,
    /// The cluster the samples belong to (`KUBE_INSIGHT_CLUSTER`).
    pub cluster: String,
    pub policy: LabelPolicy,
    /// Largest body accepted (uncompressed).
    pub max_body_bytes: usize,
}

pub struct FederateSource {
    store: DynStore,
    client: reqwest::Client,
    url: reqwest::Url,
    cfg: FederateConfig,
}

/// Why a federation source could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum FederateConfigError {
    #[error("invalid Prometheus URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("no match[] selectors: federation needs at least one")]
    NoMatchers,
    #[error("building the HTTP client: {0}")]
    Client(String),
}

impl FederateSource {
    pub fn new(store: DynStore, cfg: FederateConfig) -> Result<Self, FederateConfigError> {
        if cfg.matchers.is_empty() {
            return Err(FederateConfigError::NoMatchers);
        }
        let base = cfg.base_url.trim_end_matches('/');
        let mut url = reqwest::Url::parse(&format!("{base}/federate")).map_err(|e| {
            FederateConfigError::Url {
                url: cfg.base_url.clone(),
                reason: e.to_string(),
            }
        })?;
        {
            let mut q = url.query_pairs_mut();
            for m in &cfg.matchers {
                q.append_pair("match[]", m);
            }
        }
        let client = reqwest::Client::builder()
            .user_agent(concat!("kube-insight/", env!("CARGO_PKG_VERSION")))
            .gzip(true)
            .build()
            .map_err(|e| FederateConfigError::Client(e.to_string()))?;
        Ok(FederateSource {
            store,
            client,
            url,
            cfg,
        })
    }

    /// The full federation URL (for logs and tests).
    pub fn url(&self) -> &str {
        self.url.as_str()
    }

    async fn fetch(&self, timeout: Duration) -> Result<Vec<u8>, PullError> {
        let shown = self.cfg.base_url.as_str();
        let mut resp = self
            .client
            .get(self.url.clone())
            .header("accept", "text/plain;version=0.0.4")
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| PullError::from_reqwest(shown, timeout, e))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            let body: String = body.chars().take(300).collect();
            return Err(PullError::Http {
                url: shown.to_string(),
                status: status.as_u16(),
                body: body.trim().to_string(),
            });
        }
        let mut buf =
            Vec::with_capacity(resp.content_length().unwrap_or(1 << 20).min(64 << 20) as usize);
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| PullError::from_reqwest(shown, timeout, e))?
        {
            if buf.len() + chunk.len() > self.cfg.max_body_bytes {
                return Err(PullError::Body {
                    url: shown.to_string(),
                    reason: format!(
                        "larger than {} bytes; narrow KUBE_INSIGHT_METRICS_MATCH",
                        self.cfg.max_body_bytes
                    ),
                });
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf)
    }
}

#[async_trait]
impl PullSource for FederateSource {
    fn name(&self) -> &'static str {
        "prometheus_federate"
    }
    fn target(&self) -> &'static str {
        "metrics"
    }
    fn cluster(&self) -> &str {
        &self.cfg.cluster
    }

    async fn pull_once(&self, timeout: Duration) -> Result<PullSummary, PullError> {
        let body = self.fetch(timeout).await?;
        let now = kube_insight_core::time::now_ms();
        let mut collector = SeriesCollector::new();
        let report = parse(&body, now, |s| collector.push(s));
        let series = collector.finish();
        let mut rejected = Vec::new();
        if report.errors_total > 0 {
            rejected.push(("malformed_line", report.errors_total as u64));
        }
        let note = report.errors.first().map(|e| e.to_string());
        let summary = ingest_series(
            &self.store,
            &self.cfg.cluster,
            series,
            &self.cfg.policy,
            rejected,
            note,
        )
        .await?;
        Ok(PullSummary {
            accepted: summary.outcome.samples_written + summary.outcome.samples_duplicate,
            rejected: summary.rejected,
            note: summary.note,
        })
    }
}
