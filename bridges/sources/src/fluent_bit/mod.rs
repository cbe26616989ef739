//! `fluent_bit`: Fluent Bit's `http` output on `POST /ingest/fluent-bit`
//! (target `logs`). Decoding lives in [`decode`]; this is the wiring.
//!
//! The shared push mount has already done auth (the cluster comes from the
//! token), the queue slot, the body limit and gunzip. Answers, for Fluent
//! Bit's retry rules (FORMATS.md §3.3: it retries 408, 429 and 5xx, and drops
//! a chunk on any other 4xx): 204 once durable (200 with a note when records
//! were skipped); 400 only for a body that is not JSON at all; 429 with
//! `Retry-After` when the queue or the store is full; 503/500 when the store
//! fails. A retried chunk is stored once (the store recognises its content
//! hash).

pub mod decode;

#[cfg(test)]
mod tests;

use crate::push::{PushError, PushOutcome, PushRequest, PushSource};
use async_trait::async_trait;
use axum::http::{header, StatusCode};
use decode::{decode, DecodeOptions};
use kube_insight_store::{LogBatch, LogStore};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Bodies larger than this are decoded on the blocking pool.
const INLINE_DECODE_BYTES: usize = 64 * 1024;

/// Counters of records that were kept but adjusted (not rejected), for
/// `/metrics` and tests.
#[derive(Debug, Default)]
pub struct FluentBitStats {
    /// Timed by the `time` field or the receive time (no readable date key).
    pub time_fallback: AtomicU64,
    /// Timed at receipt.
    pub time_receive: AtomicU64,
    /// Lines cut at the line size limit.
    pub truncated: AtomicU64,
    /// Records without kubernetes metadata.
    pub no_kubernetes: AtomicU64,
}

pub struct FluentBitSource {
    store: Arc<dyn LogStore>,
    options: Arc<DecodeOptions>,
    stats: Arc<FluentBitStats>,
}

impl FluentBitSource {
    pub fn new(store: Arc<dyn LogStore>) -> Self {
        Self::with_options(store, DecodeOptions::default())
    }

    pub fn with_options(store: Arc<dyn LogStore>, options: DecodeOptions) -> Self {
        FluentBitSource {
            store,
            options: Arc::new(options),
            stats: Arc::default(),
        }
    }

    pub fn stats(&self) -> Arc<FluentBitStats> {
        self.stats.clone()
    }
}

fn now_ns() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_nanos().min(i64::MAX as u128) as i64,
        Err(_) => 0,
    }
}

#[async_trait]
impl PushSource for FluentBitSource {
    fn name(&self) -> &'static str {
        "fluent_bit"
    }
    fn target(&self) -> &'static str {
        "logs"
    }
    fn path(&self) -> &'static str {
        "/ingest/fluent-bit"
    }
    fn overload_status(&self) -> StatusCode {
        StatusCode::TOO_MANY_REQUESTS
    }

    async fn ingest(&self, req: PushRequest) -> Result<PushOutcome, PushError> {
        let ctype = req
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if ctype.starts_with("application/msgpack") {
            return Err(PushError::Unsupported(
                "Content-Type application/msgpack is not read; set the http output's Format to json_lines or json".into(),
            ));
        }
        let received = now_ns();
        let body = req.body;
        let decoded = if body.len() <= INLINE_DECODE_BYTES {
            decode(&body, received, &self.options)
        } else {
            let options = self.options.clone();
            tokio::task::spawn_blocking(move || decode(&body, received, &options))
                .await
                .map_err(|e| {
                    PushError::Store(kube_insight_store::Error::Unavailable(format!(
                        "decode task failed: {e}"
                    )))
                })?
        }
        .map_err(|e| PushError::BadRequest(e.to_string()))?;

        let s = &self.stats;
        s.time_fallback
            .fetch_add(decoded.time_fallback, Ordering::Relaxed);
        s.time_receive
            .fetch_add(decoded.time_receive, Ordering::Relaxed);
        s.truncated.fetch_add(decoded.truncated, Ordering::Relaxed);
        s.no_kubernetes
            .fetch_add(decoded.no_kubernetes, Ordering::Relaxed);
        if decoded.time_fallback > 0 {
            tracing::debug!(
                component = "fluent_bit",
                cluster = %req.cluster,
                time_fallback = decoded.time_fallback,
                time_receive = decoded.time_receive,
                "records without a readable date key: timed by their time field or at receipt (check Json_Date_Key / Json_Date_Format)"
            );
        }
        let mut rejected = decoded.malformed_counts.clone();
        let mut note = decoded.malformed.first().map(ToString::to_string);
        let outcome = if decoded.records == 0 {
            Default::default()
        } else {
            self.store
                .write_logs(LogBatch {
                    cluster: req.cluster.clone(),
                    streams: decoded.streams,
                })
                .await?
        };
        if outcome.records_too_old > 0 {
            rejected.push(("too_old", outcome.records_too_old));
            note.get_or_insert_with(|| {
                format!(
                    "{} records older than the log retention were refused",
                    outcome.records_too_old
                )
            });
        }
        Ok(PushOutcome {
            accepted: outcome.records_written + outcome.records_duplicate,
            rejected,
            note,
            refuse: None,
            json: None,
        })
    }
}
