//! Label hygiene applied to every ingested series, whatever the path
//! (remote write or federation), before it reaches the store.

use kube_insight_core::labels::is_valid_label_name;
use kube_insight_core::{Labels, Sample, TimeSeries};
use std::collections::HashMap;

/// Bounds and rules for incoming label sets.
#[derive(Debug, Clone)]
pub struct LabelPolicy {
    /// Labels dropped from cAdvisor series (`container_*`): they change on
    /// every container restart (`id` is the cgroup path, `name` the runtime id)
    /// and would turn one container into a new series per restart.
    pub drop_cadvisor: Vec<String>,
    /// Series with more labels than this are refused.
    pub max_labels: usize,
    /// Series with a label name or value longer than this are refused.
    pub max_label_bytes: usize,
}

impl Default for LabelPolicy {
    fn default() -> Self {
        LabelPolicy {
            drop_cadvisor: vec!["id".into(), "name".into()],
            max_labels: 64,
            max_label_bytes: 4096,
        }
    }
}

/// The outcome of applying the policy to a batch.
#[derive(Debug, Default)]
pub struct Transformed {
    pub series: Vec<TimeSeries>,
    /// Series refused, by reason.
    pub rejected: Vec<(&'static str, u64)>,
    /// The first refused series, for the log and the response.
    pub note: Option<String>,
}

/// Applies `policy` and stamps the cluster:
/// - `cluster` is set to the cluster of the bearer token; a `cluster` label in
///   the payload is kept as `exported_cluster` (Prometheus' convention for
///   conflicting target labels);
/// - cAdvisor's restart-unstable labels are dropped;
/// - series without a metric name, with invalid label names, too many labels
///   or oversize values are refused and counted;
/// - series that became identical are merged (samples sorted, one per
///   timestamp, first wins).
pub fn apply(cluster: &str, input: Vec<TimeSeries>, policy: &LabelPolicy) -> Transformed {
    let mut out = Transformed::default();
    let reject = |out: &mut Transformed, reason: &'static str, labels: &Labels| {
        match out.rejected.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += 1,
            None => out.rejected.push((reason, 1)),
        }
        if out.note.is_none() {
            out.note = Some(format!("{reason}: {labels}"));
        }
    };
    let mut index: HashMap<Labels, usize> = HashMap::with_capacity(input.len());
    let mut merged_any = false;
    for ts in input {
        if ts.samples.is_empty() {
            continue;
        }
        let mut labels = ts.labels;
        if labels.metric_name().is_empty() {
            reject(&mut out, "no_metric_name", &labels);
            continue;
        }
        if labels.len() > policy.max_labels {
            reject(&mut out, "too_many_labels", &labels);
            continue;
        }
        if labels.iter().any(|l| {
            l.name.len() > policy.max_label_bytes || l.value.len() > policy.max_label_bytes
        }) {
            reject(&mut out, "label_too_long", &labels);
            continue;
        }
        if labels.iter().any(|l| !is_valid_label_name(&l.name)) {
            reject(&mut out, "invalid_label_name", &labels);
            continue;
        }
        if labels.metric_name().starts_with("container_") {
            for d in &policy.drop_cadvisor {
                labels.remove(d);
            }
        }
        if let Some(c) = labels.get("cluster") {
            if c != cluster {
                let c = c.to_string();
                labels.set("exported_cluster", c);
            }
        }
        labels.set("cluster", cluster);
        match index.get(&labels) {
            Some(&i) => {
                out.series[i].samples.extend(ts.samples);
                merged_any = true;
            }
            None => {
                index.insert(labels.clone(), out.series.len());
                out.series.push(TimeSeries::new(labels, ts.samples));
            }
        }
    }
    for s in &mut out.series {
        if merged_any
            || !s
                .samples
                .windows(2)
                .all(|w| w[0].timestamp_ms < w[1].timestamp_ms)
        {
            sort_dedup(&mut s.samples);
        }
    }
    out
}

/// Sorts by timestamp and keeps the first sample of each timestamp.
pub fn sort_dedup(samples: &mut Vec<Sample>) {
    samples.sort_by_key(|s| s.timestamp_ms);
    samples.dedup_by_key(|s| s.timestamp_ms);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(pairs: &[(&str, &str)], samples: &[(i64, f64)]) -> TimeSeries {
        TimeSeries::new(
            Labels::from_pairs(pairs.iter().copied()),
            samples.iter().map(|&(t, v)| Sample::new(t, v)).collect(),
        )
    }

    #[test]
    fn stamps_the_cluster_and_keeps_a_foreign_one_as_exported() {
        let out = apply(
            "prod",
            vec![ts(&[("__name__", "up"), ("cluster", "other")], &[(1, 1.0)])],
            &LabelPolicy::default(),
        );
        let l = &out.series[0].labels;
        assert_eq!(l.get("cluster"), Some("prod"));
        assert_eq!(l.get("exported_cluster"), Some("other"));
    }

    #[test]
    fn drops_cadvisor_restart_labels_and_merges_what_became_identical() {
        let a = ts(
            &[
                ("__name__", "container_cpu_usage_seconds_total"),
                ("id", "/a"),
                ("name", "x"),
                ("pod", "p"),
            ],
            &[(1000, 1.0), (2000, 2.0)],
        );
        let b = ts(
            &[
                ("__name__", "container_cpu_usage_seconds_total"),
                ("id", "/b"),
                ("name", "y"),
                ("pod", "p"),
            ],
            &[(2000, 9.0), (3000, 3.0)],
        );
        let other = ts(
            &[("__name__", "process_x"), ("id", "keep"), ("name", "keep")],
            &[(1, 1.0)],
        );
        let out = apply("c", vec![a, b, other], &LabelPolicy::default());
        assert_eq!(out.series.len(), 2);
        let cpu = &out.series[0];
        assert_eq!(cpu.labels.get("id"), None);
        assert_eq!(cpu.labels.get("name"), None);
        let got: Vec<(i64, f64)> = cpu
            .samples
            .iter()
            .map(|s| (s.timestamp_ms, s.value))
            .collect();
        assert_eq!(got, vec![(1000, 1.0), (2000, 2.0), (3000, 3.0)]);
        assert_eq!(out.series[1].labels.get("id"), Some("keep"));
    }

    #[test]
    fn refuses_bad_series_and_counts_them() {
        let policy = LabelPolicy {
            max_labels: 3,
            ..Default::default()
        };
        let out = apply(
            "c",
            vec![
                ts(&[("job", "x")], &[(1, 1.0)]),
                ts(
                    &[("__name__", "a"), ("b", "1"), ("c", "1"), ("d", "1")],
                    &[(1, 1.0)],
                ),
                ts(&[("__name__", "a"), ("bad-name", "1")], &[(1, 1.0)]),
                ts(&[("__name__", "ok")], &[(1, 1.0)]),
                ts(&[("__name__", "empty")], &[]),
            ],
            &policy,
        );
        assert_eq!(out.series.len(), 1);
        assert_eq!(
            out.rejected,
            vec![
                ("no_metric_name", 1),
                ("too_many_labels", 1),
                ("invalid_label_name", 1)
            ]
        );
        assert!(out.note.unwrap().starts_with("no_metric_name"));
    }
}
