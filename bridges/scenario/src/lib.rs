//! `kube-insight-scenario`: a synthetic Online-Boutique-shaped cluster played
//! into kube-insight through its real ingest paths, with incidents of known
//! cause. Used by the suspects accuracy test (`tests/e2e_suspects.rs`) and by
//! `kube-insight demo`.
//!
//! - [`cluster`]: the services, nodes and Kubernetes objects;
//! - [`world`]: state over time and the signals of each scrape (pure);
//! - [`scenarios`]: the incident catalogue with causes and distractors;
//! - [`apiserver`]: a scripted API server for the `events` watch;
//! - [`player`]: remote write, Fluent Bit and the API server, in time order.

pub mod apiserver;
pub mod cluster;
pub mod player;
pub mod scenarios;
pub mod world;

pub use apiserver::ApiServer;
pub use player::{PlayError, Player, WATCH_KINDS, WATCH_PLURALS};
pub use scenarios::{catalog, Cause, ScenarioType};
pub use world::{Effect, World, STEP_MS};

/// The timeline of one played scenario (ms).
#[derive(Debug, Clone, Copy)]
pub struct Timeline {
    /// First scrape of the backdated history.
    pub start: i64,
    /// The cause's change.
    pub incident: i64,
    /// Last scrape: when the symptom is looked at.
    pub end: i64,
}

impl Timeline {
    /// `history` of scrapes ending at `end` (rounded down to a scrape), the
    /// incident `before_end` earlier.
    pub fn ending_at(
        end: i64,
        history: std::time::Duration,
        before_end: std::time::Duration,
    ) -> Timeline {
        let end = end - end.rem_euclid(STEP_MS);
        let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Timeline {
            start: end - ms(history),
            incident: end - ms(before_end),
            end,
        }
    }
}

/// Builds the world of scenario number `k` of the catalogue on `tl`: the
/// baseline, an older harmless rollout, the distractors and the incident.
pub fn build(k: usize, s: &ScenarioType, tl: Timeline) -> World {
    let mut w = World::new(k as u64 + 1, tl.start);
    scenarios::history(&mut w, tl.end);
    scenarios::distractors(&mut w, tl.incident, k);
    s.inject(&mut w, tl.incident);
    w
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Every scenario's samples are finite and its counters never go down
    /// (a series restarting at a new pod is a new series).
    #[test]
    fn every_scenario_plays_finite_monotonic_counters() {
        for (k, s) in catalog().iter().enumerate() {
            let tl = Timeline::ending_at(
                1_800_000_000_000,
                std::time::Duration::from_secs(5 * 60),
                std::time::Duration::from_secs(2 * 60),
            );
            let mut w = build(k, s, tl);
            let mut last: HashMap<u64, f64> = HashMap::new();
            let mut t = tl.start;
            while t <= tl.end {
                let mut b = world::Batch::default();
                w.step(t, &mut b);
                for ser in b.take_series() {
                    for x in &ser.samples {
                        assert!(x.value.is_finite(), "{}: {:?} at {t}", s.id, ser.labels);
                    }
                    let name = ser.labels.metric_name();
                    if name.ends_with("_total")
                        || name.ends_with("_bucket")
                        || name.ends_with("_count")
                        || name.ends_with("_sum")
                    {
                        let v = ser.samples[0].value;
                        let prev = last.insert(ser.labels.fingerprint(), v).unwrap_or(0.0);
                        assert!(
                            v >= prev,
                            "{}: {:?} went down {prev} -> {v}",
                            s.id,
                            ser.labels
                        );
                    }
                }
                t += STEP_MS;
            }
        }
    }
}
