//! The one loop every pull source shares: interval, timeout, backoff with
//! jitter, logging once per state change (not once per pull), telemetry and
//! graceful shutdown. A source writes only [`PullSource::pull_once`].

use async_trait::async_trait;
use kube_insight_telemetry::{labels, Telemetry};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct PullConfig {
    pub interval: Duration,
    /// Per-pull deadline (the whole request, body included).
    pub timeout: Duration,
    /// Longest wait between failed pulls.
    pub max_backoff: Duration,
}

impl PullConfig {
    pub fn every(interval: Duration) -> Self {
        PullConfig {
            interval,
            timeout: interval.mul_f64(0.8).max(Duration::from_secs(1)),
            max_backoff: Duration::from_secs(300).max(interval),
        }
    }
}

/// What a successful pull did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PullSummary {
    pub accepted: u64,
    /// Records skipped, by reason.
    pub rejected: Vec<(&'static str, u64)>,
    /// First skipped record, for the log.
    pub note: Option<String>,
}

/// Why a pull failed; the kind is the state that is logged and counted.
#[derive(Debug, Error)]
pub enum PullError {
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url} answered HTTP {status}: {body}")]
    Http {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url} did not answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("reading the body from {url}: {reason}")]
    Body { url: String, reason: String },
    #[error("{url} sent a body that cannot be decoded: {reason}")]
    Decode { url: String, reason: String },
    #[error("store: {0}")]
    Store(#[from] kube_insight_store::Error),
    /// The collector's fence refused the write: `holder` does not lead.
    #[error("{holder} does not hold the collector lease: not writing")]
    NotLeader { holder: String },
}

impl PullError {
    /// The state name (a metric label value).
    pub fn kind(&self) -> &'static str {
        match self {
            PullError::Unreachable { .. } => "unreachable",
            PullError::Http { .. } => "http_error",
            PullError::Timeout { .. } => "timeout",
            PullError::Body { .. } => "body_error",
            PullError::Decode { .. } => "decode_error",
            PullError::Store(_) => "store_error",
            PullError::NotLeader { .. } => "not_leader",
        }
    }

    /// Classifies a reqwest error.
    pub fn from_reqwest(url: &str, timeout: Duration, e: reqwest::Error) -> Self {
        if e.is_timeout() {
            PullError::Timeout {
                url: url.to_string(),
                timeout,
            }
        } else if e.is_connect() || e.is_request() && !e.is_body() {
            PullError::Unreachable {
                url: url.to_string(),
                reason: error_chain(&e),
            }
        } else {
            PullError::Body {
                url: url.to_string(),
                reason: error_chain(&e),
            }
        }
    }
}

/// An error and its causes on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let cs = c.to_string();
        if !s.contains(&cs) {
            s.push_str(": ");
            s.push_str(&cs);
        }
        cur = c.source();
    }
    s
}

#[async_trait]
pub trait PullSource: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn target(&self) -> &'static str;
    /// The monitored cluster the pulled records belong to (the `cluster`
    /// label of the record counters).
    fn cluster(&self) -> &str;
    /// One pull: fetch, decode, store. Must not store a partial body.
    async fn pull_once(&self, timeout: Duration) -> Result<PullSummary, PullError>;
}

/// Runs `source` until `shutdown` is cancelled. Never returns an error: a
/// failing pull backs off and tries again.
pub async fn run(
    source: Arc<dyn PullSource>,
    cfg: PullConfig,
    telemetry: Arc<Telemetry>,
    shutdown: CancellationToken,
) {
    let name = source.name();
    let target = source.target();
    let mut failures: u32 = 0;
    let mut last_state: Option<&'static str> = None;
    tracing::info!(
        component = name,
        interval_s = cfg.interval.as_secs_f64(),
        "pull loop started"
    );
    loop {
        let started = tokio::time::Instant::now();
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = tokio::time::timeout(cfg.timeout + Duration::from_secs(1), source.pull_once(cfg.timeout)) => r,
        };
        let outcome = match outcome {
            Ok(r) => r,
            Err(_) => Err(PullError::Timeout {
                url: name.to_string(),
                timeout: cfg.timeout,
            }),
        };
        let wait = match outcome {
            Ok(summary) => {
                telemetry
                    .pulls
                    .get_or_create(&labels([("component", name), ("outcome", "ok")]))
                    .inc();
                telemetry.record_in(target, name, source.cluster(), summary.accepted);
                let mut rejected = 0;
                for (reason, n) in &summary.rejected {
                    rejected += n;
                    telemetry.record_rejected(target, name, source.cluster(), reason, *n);
                }
                if last_state != Some("ok") {
                    if failures > 0 {
                        tracing::info!(
                            component = name,
                            failures,
                            accepted = summary.accepted,
                            "pull recovered"
                        );
                    } else {
                        tracing::info!(
                            component = name,
                            accepted = summary.accepted,
                            "first pull succeeded"
                        );
                    }
                    last_state = Some("ok");
                }
                if rejected > 0 {
                    tracing::warn!(
                        component = name,
                        accepted = summary.accepted,
                        rejected,
                        note = summary.note.as_deref().unwrap_or(""),
                        "pull skipped malformed records"
                    );
                }
                failures = 0;
                cfg.interval.saturating_sub(started.elapsed())
            }
            Err(e) => {
                let kind = e.kind();
                telemetry
                    .pulls
                    .get_or_create(&labels([("component", name), ("outcome", kind)]))
                    .inc();
                failures = failures.saturating_add(1);
                if last_state != Some(kind) {
                    tracing::warn!(component = name, error = %e, state = kind, "pull failing; retrying with backoff (logged again only when the state changes)");
                    last_state = Some(kind);
                } else {
                    tracing::debug!(component = name, error = %e, failures, "pull still failing");
                }
                backoff(cfg.interval, cfg.max_backoff, failures)
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    tracing::info!(component = name, "pull loop stopped");
}

/// Exponential backoff from `base`, capped, with ±20 % jitter.
pub fn backoff(base: Duration, cap: Duration, failures: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    let d = exp.min(cap).max(Duration::from_millis(100));
    let jitter: f64 = rand::random::<f64>() * 0.4 + 0.8;
    d.mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = Duration::from_secs(1);
        let cap = Duration::from_secs(30);
        assert!(backoff(b, cap, 1) <= Duration::from_millis(1200));
        assert!(backoff(b, cap, 4) >= Duration::from_millis(6400));
        assert!(backoff(b, cap, 30) <= Duration::from_secs(36));
    }

    struct Flaky(AtomicU32);

    #[async_trait]
    impl PullSource for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }
        fn target(&self) -> &'static str {
            "test"
        }
        fn cluster(&self) -> &str {
            "c1"
        }
        async fn pull_once(&self, _t: Duration) -> Result<PullSummary, PullError> {
            let n = self.0.fetch_add(1, Ordering::SeqCst);
            if n.is_multiple_of(2) {
                Err(PullError::Http {
                    url: "u".into(),
                    status: 500,
                    body: "boom".into(),
                })
            } else {
                Ok(PullSummary {
                    accepted: 10,
                    ..Default::default()
                })
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn loop_keeps_going_through_failures_and_stops_on_shutdown() {
        let src = Arc::new(Flaky(AtomicU32::new(0)));
        let tel = Arc::new(Telemetry::new());
        let stop = CancellationToken::new();
        let h = tokio::spawn(run(
            src.clone(),
            PullConfig::every(Duration::from_secs(1)),
            tel.clone(),
            stop.clone(),
        ));
        tokio::time::sleep(Duration::from_secs(20)).await;
        stop.cancel();
        h.await.unwrap();
        let pulls = src.0.load(Ordering::SeqCst);
        assert!(pulls >= 6, "pulls={pulls}");
        let text = tel.render();
        assert!(text.contains("outcome=\"http_error\""), "{text}");
        assert!(
            text.contains(
                "kube_insight_records_in_total{target=\"test\",component=\"flaky\",cluster=\"c1\"}"
            ),
            "{text}"
        );
    }
}
