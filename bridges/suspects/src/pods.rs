//! Per-pod comparison after a rollout: the pods that appeared after the
//! change (the new ReplicaSet's) against the pods that were there before
//! (the old one's), by error ratio over the same time. Pure.

use crate::model::ReplicaSetContrast;
use kube_insight_core::topology::counter_increase;
use kube_insight_core::{is_stale_nan, Sample, TimeSeries};
use std::collections::BTreeMap;

/// The pod label of Beyla's application metrics.
pub const POD_LABEL: &str = "k8s_pod_name";

#[derive(Default)]
struct Pod {
    first_ms: i64,
    requests: f64,
    errors: f64,
}

fn after(samples: &[Sample], from_ms: i64, to_ms: i64) -> Vec<Sample> {
    samples
        .iter()
        .filter(|s| s.timestamp_ms >= from_ms && s.timestamp_ms <= to_ms)
        .copied()
        .collect()
}

fn first_ms(samples: &[Sample]) -> Option<i64> {
    samples
        .iter()
        .find(|s| !is_stale_nan(s.value))
        .map(|s| s.timestamp_ms)
}

/// The contrast for a change at `change_ms`, over `[change_ms, end_ms]`:
/// `requests`/`errors` are request and error counters carrying
/// [`POD_LABEL`]. A pod whose first sample is at or after the change is
/// new. `None` unless both groups served requests.
pub fn replicaset_contrast(
    requests: &[TimeSeries],
    errors: &[TimeSeries],
    change_ms: i64,
    end_ms: i64,
) -> Option<ReplicaSetContrast> {
    let mut pods: BTreeMap<&str, Pod> = BTreeMap::new();
    for (series, is_error) in [(requests, false), (errors, true)] {
        for s in series {
            let Some(pod) = s.labels.get(POD_LABEL).filter(|p| !p.is_empty()) else {
                continue;
            };
            let Some(first) = first_ms(&s.samples) else {
                continue;
            };
            let p = pods.entry(pod).or_insert(Pod {
                first_ms: first,
                ..Pod::default()
            });
            p.first_ms = p.first_ms.min(first);
            let window = after(&s.samples, change_ms, end_ms);
            // A series born after the change counted from zero.
            let born = if first >= change_ms {
                window.first().map_or(0.0, |s| s.value)
            } else {
                0.0
            };
            let inc = counter_increase(&window).map_or(0.0, |(i, _)| i) + born;
            if is_error {
                p.errors += inc;
            } else {
                p.requests += inc;
            }
        }
    }
    let (mut new, mut old) = ((0usize, 0.0, 0.0), (0usize, 0.0, 0.0));
    for p in pods.values() {
        let g = if p.first_ms >= change_ms {
            &mut new
        } else {
            &mut old
        };
        if p.requests > 0.0 {
            g.0 += 1;
            g.1 += p.requests;
            g.2 += p.errors;
        }
    }
    if new.0 == 0 || old.0 == 0 {
        return None;
    }
    Some(ReplicaSetContrast {
        new_pods: new.0,
        old_pods: old.0,
        new_ratio: (new.2 / new.1).min(1.0),
        old_ratio: (old.2 / old.1).min(1.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_insight_core::Labels;

    fn counter(pod: &str, from: i64, per_step: f64) -> TimeSeries {
        TimeSeries::new(
            Labels::from_pairs([("__name__", "c"), (POD_LABEL, pod)]),
            (0..20)
                .map(|i| Sample::new(from + i * 15_000, per_step * i as f64))
                .collect(),
        )
    }

    #[test]
    fn new_pods_against_old_pods() {
        let change = 100_000;
        let reqs = vec![
            counter("pay-old-1", 0, 10.0),
            counter("pay-old-2", 0, 10.0),
            counter("pay-new-1", 120_000, 10.0),
        ];
        let errs = vec![
            counter("pay-old-1", 0, 0.02),
            counter("pay-new-1", 120_000, 3.1),
        ];
        let c = replicaset_contrast(&reqs, &errs, change, 400_000).unwrap();
        assert_eq!((c.new_pods, c.old_pods), (1, 2));
        assert!((c.new_ratio - 0.31).abs() < 0.01, "{c:?}");
        assert!(c.old_ratio < 0.002, "{c:?}");
        assert!(c.strength() > 0.9);
        // Only old pods: nothing to compare.
        assert!(replicaset_contrast(&reqs[..2], &errs[..1], change, 400_000).is_none());
    }
}
