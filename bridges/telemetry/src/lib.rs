//! kube-insight's own metrics, served on the ops listener at `/metrics`.
//!
//! One [`Telemetry`] is created by the server and shared (as `Arc`) with every
//! target. Metric families are labelled by `target` (metrics, logs, …) and by
//! `component` (the snake_case name of the source: `prometheus_remote_write`,
//! `prometheus_federate`, …), the same name as the module, the config key and
//! the tracing span.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::Mutex;

type Labels2 = Vec<(&'static str, String)>;

pub struct Telemetry {
    registry: Mutex<Registry>,
    /// Records accepted, by target and component.
    pub records_in: Family<Labels2, Counter>,
    /// Records refused or skipped, by target, component and reason.
    pub records_rejected: Family<Labels2, Counter>,
    /// Push requests answered, by component and HTTP status code.
    pub push_requests: Family<Labels2, Counter>,
    /// Requests being processed per push component (the bounded queue's depth).
    pub queue_depth: Family<Labels2, Gauge>,
    /// Pulls by component and outcome (ok, http_error, timeout, unreachable, …).
    pub pulls: Family<Labels2, Counter>,
    /// Store write latency in seconds, by signal.
    pub store_write_seconds: Family<Labels2, Histogram>,
    /// Store errors, by signal and kind.
    pub store_errors: Family<Labels2, Counter>,
    /// Active series per cluster (refreshed from the store).
    pub active_series: Family<Labels2, Gauge>,
    /// Samples held in the metrics head.
    pub head_samples: Gauge,
    /// Read API requests by endpoint and status.
    pub api_requests: Family<Labels2, Counter>,
    /// Read API latency by endpoint.
    pub api_seconds: Family<Labels2, Histogram>,
    /// 1 for each target this process runs.
    pub target_up: Family<Labels2, Gauge>,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("kube_insight");
        let t = Telemetry {
            records_in: Family::default(),
            records_rejected: Family::default(),
            push_requests: Family::default(),
            queue_depth: Family::default(),
            pulls: Family::default(),
            store_write_seconds: Family::new_with_constructor(latency_histogram),
            store_errors: Family::default(),
            active_series: Family::default(),
            head_samples: Gauge::default(),
            api_requests: Family::default(),
            api_seconds: Family::new_with_constructor(latency_histogram),
            target_up: Family::default(),
            registry: Mutex::new(Registry::default()),
        };
        r.register(
            "records_in",
            "Records accepted, by target and component",
            t.records_in.clone(),
        );
        r.register(
            "records_rejected",
            "Records refused or skipped, by target, component and reason",
            t.records_rejected.clone(),
        );
        r.register(
            "push_requests",
            "Push requests answered, by component and status code",
            t.push_requests.clone(),
        );
        r.register(
            "queue_depth",
            "Push requests in flight per component (bounded)",
            t.queue_depth.clone(),
        );
        r.register("pulls", "Pulls by component and outcome", t.pulls.clone());
        r.register(
            "store_write_seconds",
            "Store write latency by signal",
            t.store_write_seconds.clone(),
        );
        r.register(
            "store_errors",
            "Store errors by signal and kind",
            t.store_errors.clone(),
        );
        r.register(
            "active_series",
            "Active metric series per cluster",
            t.active_series.clone(),
        );
        r.register(
            "head_samples",
            "Samples in the metrics head, not yet in chunks",
            t.head_samples.clone(),
        );
        r.register(
            "api_requests",
            "Read API requests by endpoint and status",
            t.api_requests.clone(),
        );
        r.register(
            "api_seconds",
            "Read API latency by endpoint",
            t.api_seconds.clone(),
        );
        r.register(
            "target_up",
            "1 for each target this process runs",
            t.target_up.clone(),
        );
        if let Ok(mut g) = t.registry.lock() {
            *g = r;
        }
        t
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Ok(r) = self.registry.lock() {
            // Writing into a String cannot fail.
            let _ = encode(&mut out, &r);
        }
        out
    }
}

/// Shorthand for a label set.
pub fn labels<const N: usize>(pairs: [(&'static str, &str); N]) -> Labels2 {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_registered_families() {
        let t = Telemetry::new();
        t.records_in
            .get_or_create(&labels([
                ("target", "metrics"),
                ("component", "prometheus_federate"),
            ]))
            .inc_by(3);
        let text = t.render();
        assert!(
            text.contains("kube_insight_records_in_total{target=\"metrics\",component=\"prometheus_federate\"} 3"),
            "{text}"
        );
    }
}
