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
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
    /// Series per cluster that count toward the series cap (written within
    /// the head grace).
    pub series_counted: Family<Labels2, Gauge>,
    /// The series cap per cluster (`KUBE_INSIGHT_MAX_SERIES`).
    pub series_cap: Gauge,
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
            series_counted: Family::default(),
            series_cap: Gauge::default(),
            head_samples: Gauge::default(),
            api_requests: Family::default(),
            api_seconds: Family::new_with_constructor(latency_histogram),
            target_up: Family::default(),
            build_info: Family::default(),
            queue_capacity: Family::default(),
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
            "series_counted",
            "Series per cluster counting toward the series cap (written within the head grace)",
            t.series_counted.clone(),
        );
        r.register(
            "series_cap",
            "Series per cluster the cap admits (KUBE_INSIGHT_MAX_SERIES)",
            t.series_cap.clone(),
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

/// How close each cluster is to the series cap: sets `series_counted` and
/// `series_cap`, and says which clusters to log, each at most once per
/// `every` while at or above [`CapWatch::NEAR`] of the cap.
pub struct CapWatch {
    every: Duration,
    last: HashMap<String, Instant>,
    known: HashSet<String>,
}

impl CapWatch {
    /// The share of the cap from which a cluster is logged.
    pub const NEAR: f64 = 0.8;

    pub fn new(every: Duration) -> Self {
        CapWatch {
            every,
            last: HashMap::new(),
            known: HashSet::new(),
        }
    }

    /// Updates the gauges from the store's counts; returns the clusters to
    /// log now, with their count.
    pub fn observe(
        &mut self,
        t: &Telemetry,
        counted: &[(String, u64)],
        cap: u64,
        now: Instant,
    ) -> Vec<(String, u64)> {
        t.series_cap.set(i64::try_from(cap).unwrap_or(i64::MAX));
        let current: HashSet<String> = counted.iter().map(|(c, _)| c.clone()).collect();
        for gone in self.known.difference(&current) {
            t.series_counted
                .get_or_create(&labels([("cluster", gone)]))
                .set(0);
        }
        self.known = current;
        let mut out = Vec::new();
        for (cluster, n) in counted {
            t.series_counted
                .get_or_create(&labels([("cluster", cluster)]))
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
            if cap == 0 || (*n as f64) < Self::NEAR * cap as f64 {
                continue;
            }
            let due = self
                .last
                .get(cluster)
                .is_none_or(|at| now.saturating_duration_since(*at) >= self.every);
            if due {
                self.last.insert(cluster.clone(), now);
                out.push((cluster.clone(), *n));
            }
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

    #[test]
    fn the_series_cap_is_shown_and_said_at_most_once_per_period() {
        let t = Telemetry::new();
        let mut w = CapWatch::new(Duration::from_secs(600));
        let t0 = Instant::now();
        let counts = vec![("a".to_string(), 90), ("b".to_string(), 10)];
        assert_eq!(w.observe(&t, &counts, 100, t0), vec![("a".to_string(), 90)]);
        let text = t.render();
        assert!(text.contains("kube_insight_series_cap 100"), "{text}");
        assert!(
            text.contains("kube_insight_series_counted{cluster=\"a\"} 90"),
            "{text}"
        );
        // Rate-limited per cluster.
        assert!(w
            .observe(&t, &counts, 100, t0 + Duration::from_secs(60))
            .is_empty());
        let again = w.observe(&t, &counts, 100, t0 + Duration::from_secs(600));
        assert_eq!(again, vec![("a".to_string(), 90)]);
        // A cluster that no longer counts any series shows 0.
        w.observe(&t, &[("b".to_string(), 10)], 100, t0);
        assert!(
            t.render()
                .contains("kube_insight_series_counted{cluster=\"a\"} 0"),
            "{}",
            t.render()
        );
    }
}
