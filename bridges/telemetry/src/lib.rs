//! kube-insight's own metrics, served on the ops listener at `/metrics`.
//!
//! One [`Telemetry`] is created by the server and shared (as `Arc`) with every
//! target. Metric families are labelled by `target` (metrics, logs, …) and by
//! `component` (the snake_case name of the source: `prometheus_remote_write`,
//! `prometheus_federate`, …), the same name as the module, the config key and
//! the tracing span. The per-signal record counters also carry `cluster`
//! (from the push token, or `KUBE_INSIGHT_CLUSTER` for pulls and the watch),
//! so a monitored cluster that goes silent shows; every label set is bounded
//! (targets and components are fixed, clusters come from the tokens file).

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
    /// Records accepted, by target, component and cluster ([`Telemetry::record_in`]).
    pub records_in: Family<Labels2, Counter>,
    /// Records refused or skipped, by target, component, cluster and reason
    /// ([`Telemetry::record_rejected`]).
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
    /// 1, labelled with the `version` and git `commit` of the binary.
    pub build_info: Family<Labels2, Gauge>,
    /// Push requests one component processes at once (`KUBE_INSIGHT_INGEST_MAX_IN_FLIGHT`).
    pub queue_capacity: Family<Labels2, Gauge>,
    /// The active-series cap per cluster (`KUBE_INSIGHT_MAX_SERIES`).
    pub series_limit: Gauge,
    /// The schema version found in the store (re-read every maintenance pass).
    pub schema_version: Gauge,
    /// The schema version this binary needs.
    pub schema_version_required: Gauge,
    /// 1 while this process leads the collector targets (events, topology),
    /// by target; a process without them does not export it.
    pub collector_leader: Family<Labels2, Gauge>,
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
            build_info: Family::default(),
            queue_capacity: Family::default(),
            series_limit: Gauge::default(),
            schema_version: Gauge::default(),
            schema_version_required: Gauge::default(),
            collector_leader: Family::default(),
            registry: Mutex::new(Registry::default()),
        };
        r.register(
            "records_in",
            "Records accepted, by target, component and cluster",
            t.records_in.clone(),
        );
        r.register(
            "records_rejected",
            "Records refused or skipped, by target, component, cluster and reason",
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
        r.register(
            "build_info",
            "1, labelled with the version and git commit of the binary",
            t.build_info.clone(),
        );
        r.register(
            "queue_capacity",
            "Push requests a component processes at once; beyond, 429/503",
            t.queue_capacity.clone(),
        );
        r.register(
            "series_limit",
            "The active-series cap per cluster",
            t.series_limit.clone(),
        );
        r.register(
            "schema_version",
            "The schema version found in the store",
            t.schema_version.clone(),
        );
        r.register(
            "schema_version_required",
            "The schema version this binary needs",
            t.schema_version_required.clone(),
        );
        r.register(
            "collector_leader",
            "1 while this process leads the collector targets, by target",
            t.collector_leader.clone(),
        );
        if let Ok(mut g) = t.registry.lock() {
            *g = r;
        }
        t
    }

    /// Counts `n` records of `cluster` accepted by `target`'s `component`.
    pub fn record_in(&self, target: &str, component: &str, cluster: &str, n: u64) {
        self.records_in
            .get_or_create(&labels([
                ("target", target),
                ("component", component),
                ("cluster", cluster),
            ]))
            .inc_by(n);
    }

    /// Counts `n` records refused or skipped for `reason`. `cluster` is empty
    /// when the refusal came before the token was read (a full queue).
    pub fn record_rejected(
        &self,
        target: &str,
        component: &str,
        cluster: &str,
        reason: &str,
        n: u64,
    ) {
        self.records_rejected
            .get_or_create(&labels([
                ("target", target),
                ("component", component),
                ("cluster", cluster),
                ("reason", reason),
            ]))
            .inc_by(n);
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
        t.record_in("metrics", "prometheus_federate", "prod-eu-1", 3);
        t.record_rejected("logs", "fluent_bit", "prod-eu-1", "too_long", 2);
        let text = t.render();
        assert!(
            text.contains("kube_insight_records_in_total{target=\"metrics\",component=\"prometheus_federate\",cluster=\"prod-eu-1\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("kube_insight_records_rejected_total{target=\"logs\",component=\"fluent_bit\",cluster=\"prod-eu-1\",reason=\"too_long\"} 2"),
            "{text}"
        );
    }
}
