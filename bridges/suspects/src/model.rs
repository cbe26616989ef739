//! Candidates and their ranking: the scoring formula, its priors, and the
//! answer's shape. Pure (the store reads are in [`crate::query`]).
//!
//! # Score
//! ```text
//! score = prior(category) · (0.35·T + 0.20·D + 0.45·E)
//! T = exp(−max(0, onset − t) / τ),  τ = clamp(window / 12, 2 min, 30 min)
//!     (a change between the onset and one bin after the alarm counts as
//!      at the onset: the onset is dated at a bin's start and is uncertain
//!      up to the alarm; a later change is an effect, T = 0)
//! D = 1 / (1 + distance)
//! E = max(shift strength at the changed entity, ReplicaSet contrast),
//!     or 0.25 when the changed entity has no signal to measure
//! ```
//! All three terms and the prior are in 0–1, so the score is too. Ties are
//! broken by the time nearest the onset, then kind, namespace, name.

use crate::signals::{Shift, Unit};
use kube_insight_core::time::format_rfc3339_ms;
use serde::Serialize;
use serde_json::{json, Value};

/// What kind of change a candidate is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Image,
    Config,
    Secret,
    Spec,
    Scale,
    Rollout,
    Node,
    Dependency,
    NetworkPolicy,
    Hpa,
    Pdb,
    Service,
    Event,
    LogPattern,
}

impl Category {
    pub const ALL: [Category; 14] = [
        Category::Image,
        Category::Config,
        Category::Secret,
        Category::Spec,
        Category::Scale,
        Category::Rollout,
        Category::Node,
        Category::Dependency,
        Category::NetworkPolicy,
        Category::Hpa,
        Category::Pdb,
        Category::Service,
        Category::Event,
        Category::LogPattern,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Category::Image => "image",
            Category::Config => "config",
            Category::Secret => "secret",
            Category::Spec => "spec",
            Category::Scale => "scale",
            Category::Rollout => "rollout",
            Category::Node => "node",
            Category::Dependency => "dependency",
            Category::NetworkPolicy => "network_policy",
            Category::Hpa => "hpa",
            Category::Pdb => "pdb",
            Category::Service => "service",
            Category::Event => "event",
            Category::LogPattern => "log_pattern",
        }
    }

    /// How likely a change of this kind is to cause a degradation, before
    /// any evidence: deliberate code and configuration changes first, then
    /// infrastructure, then symptoms that are often consequences (events,
    /// new log lines).
    pub fn prior(self) -> f64 {
        match self {
            Category::Image => 1.0,
            Category::Config => 0.9,
            Category::Rollout => 0.9,
            Category::Secret => 0.85,
            Category::Spec => 0.85,
            Category::NetworkPolicy => 0.85,
            Category::Dependency => 0.8,
            Category::Node => 0.75,
            Category::Service => 0.7,
            Category::Hpa => 0.65,
            Category::Event => 0.6,
            Category::Scale => 0.55,
            Category::LogPattern => 0.5,
            Category::Pdb => 0.4,
        }
    }
}

/// Pods of the new and the old ReplicaSet after a rollout, and their
/// error ratios over the same time.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaSetContrast {
    pub new_pods: usize,
    pub old_pods: usize,
    pub new_ratio: f64,
    pub old_ratio: f64,
}

impl ReplicaSetContrast {
    /// 0–1: how much worse the new pods are, relative to the new ratio.
    pub fn strength(&self) -> f64 {
        let d = self.new_ratio - self.old_ratio;
        if d <= 0.005 {
            return 0.0;
        }
        (d / self.new_ratio.max(0.01)).clamp(0.0, 1.0)
    }

    pub fn evidence(&self) -> String {
        format!(
            "the new ReplicaSet's pods ({}) fail {}, the old ones ({}) {}",
            self.new_pods,
            Unit::Ratio.fmt(self.new_ratio),
            self.old_pods,
            Unit::Ratio.fmt(self.old_ratio)
        )
    }
}

/// One change that might explain the symptom.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub time_ms: i64,
    pub cluster: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// The workload the change belongs to (`namespace/name` is
    /// `namespace` + this).
    pub workload: String,
    /// The workload's namespace (a Node's candidate: the affected workload's).
    pub workload_namespace: String,
    pub category: Category,
    pub summary: String,
    pub who: Option<String>,
    pub distance: usize,
    /// Evidence found while collecting (references, selection, hops).
    pub why: Vec<String>,
    pub shift: Option<Shift>,
    pub replicasets: Option<ReplicaSetContrast>,
    /// The changed entity had no signal to measure a shift on.
    pub unmeasured: bool,
}

/// The score's terms, kept for the answer (`score_parts`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ScoreParts {
    pub prior: f64,
    pub time: f64,
    pub distance: f64,
    pub evidence: f64,
}

/// Weights of the terms (sum 1).
pub const W_TIME: f64 = 0.35;
pub const W_DISTANCE: f64 = 0.20;
pub const W_EVIDENCE: f64 = 0.45;
/// Evidence of a change whose entity has no signal to measure.
pub const UNMEASURED_EVIDENCE: f64 = 0.25;

/// The time scale of proximity for a window.
pub fn tau_ms(window_ms: i64) -> i64 {
    (window_ms / 12).clamp(2 * 60_000, 30 * 60_000)
}

/// The score of a candidate for a symptom with its onset at `onset_ms`,
/// on a grid of `step_ms`, in a window of `window_ms`.
pub fn score(c: &Candidate, onset: &OnsetInfo, step_ms: i64, window_ms: i64) -> (f64, ScoreParts) {
    let onset_ms = onset.time_ms;
    let dt = if c.time_ms <= onset.alarm_ms.max(onset_ms) + step_ms {
        (onset_ms - c.time_ms).max(0)
    } else {
        // Later than a bin after the alarm: an effect, not a cause.
        i64::MAX / 4
    };
    let time = (-(dt as f64) / tau_ms(window_ms) as f64).exp();
    let distance = 1.0 / (1.0 + c.distance as f64);
    let shift = c.shift.as_ref().map_or(0.0, |s| s.strength);
    let rs = c.replicasets.as_ref().map_or(0.0, |r| r.strength());
    let evidence = if c.unmeasured && c.shift.is_none() && c.replicasets.is_none() {
        UNMEASURED_EVIDENCE
    } else {
        shift.max(rs)
    };
    let prior = c.category.prior();
    let s = prior * (W_TIME * time + W_DISTANCE * distance + W_EVIDENCE * evidence);
    (
        s.clamp(0.0, 1.0),
        ScoreParts {
            prior,
            time,
            distance,
            evidence,
        },
    )
}

/// When and where the symptom started.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OnsetInfo {
    pub time: String,
    pub time_ms: i64,
    /// When the change-point test passed its threshold (≥ `time_ms`).
    pub alarm_ms: i64,
    /// `true` when a signal left its baseline; `false` when none did and
    /// the onset is `at` (every change in the window is a candidate).
    pub detected: bool,
    /// The signal (`error ratio`, `mean latency`, …), empty when not detected.
    pub signal: String,
    /// `namespace/name` of the workload whose signal it is.
    pub subject: String,
    pub source: String,
    pub baseline: Option<f64>,
    pub value: Option<f64>,
    pub unit: Option<Unit>,
    /// E.g. "error ratio of shop/frontend left its baseline 0.2 % at …, now 30 %".
    pub summary: String,
}

/// One ranked suspect as answered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Suspect {
    pub rank: usize,
    pub score: f64,
    pub time: String,
    pub time_ms: i64,
    pub cluster: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub workload: String,
    pub workload_namespace: String,
    pub category: Category,
    pub summary: String,
    pub who: Option<String>,
    pub distance: usize,
    pub why: Vec<String>,
    pub score_parts: ScoreParts,
    pub onset: OnsetInfo,
}

/// Ranks candidates: scores them, keeps the best of each (kind, namespace,
/// name, category), sorts best first, cuts to `limit`. `header` lines (the
/// onset, the topology used, caps hit) are appended to every `why`.
pub fn rank(
    candidates: Vec<Candidate>,
    onset: &OnsetInfo,
    step_ms: i64,
    window_ms: i64,
    header: &[String],
    limit: usize,
) -> Vec<Suspect> {
    let mut scored: Vec<(f64, ScoreParts, Candidate)> = candidates
        .into_iter()
        .map(|c| {
            let (s, p) = score(&c, onset, step_ms, window_ms);
            (s, p, c)
        })
        .collect();
    let order = |a: &(f64, ScoreParts, Candidate), b: &(f64, ScoreParts, Candidate)| {
        b.0.total_cmp(&a.0)
            .then_with(|| {
                (onset.time_ms - a.2.time_ms)
                    .abs()
                    .cmp(&(onset.time_ms - b.2.time_ms).abs())
            })
            .then_with(|| a.2.kind.cmp(&b.2.kind))
            .then_with(|| a.2.namespace.cmp(&b.2.namespace))
            .then_with(|| a.2.name.cmp(&b.2.name))
            .then_with(|| a.2.category.cmp(&b.2.category))
            .then_with(|| a.2.time_ms.cmp(&b.2.time_ms))
    };
    scored.sort_by(order);
    let mut seen = std::collections::HashSet::new();
    scored.retain(|(_, _, c)| {
        seen.insert((
            c.cluster.clone(),
            c.kind.clone(),
            c.namespace.clone(),
            c.name.clone(),
            c.category,
        ))
    });
    scored.truncate(limit);
    scored
        .into_iter()
        .enumerate()
        .map(|(i, (s, parts, c))| {
            let mut why = c.why;
            if let Some(r) = &c.replicasets {
                why.insert(0, r.evidence());
            }
            if let Some(sh) = &c.shift {
                why.insert(0, sh.evidence());
            } else if c.unmeasured {
                why.push(format!(
                    "no request or saturation metrics for {}/{} around this change",
                    c.workload_namespace, c.workload
                ));
            }
            why.push(time_evidence(c.time_ms, onset));
            why.extend(header.iter().cloned());
            Suspect {
                rank: i + 1,
                score: (s * 1000.0).round() / 1000.0,
                time: format_rfc3339_ms(c.time_ms),
                time_ms: c.time_ms,
                cluster: c.cluster,
                kind: c.kind,
                namespace: c.namespace,
                name: c.name,
                workload: c.workload,
                workload_namespace: c.workload_namespace,
                category: c.category,
                summary: c.summary,
                who: c.who,
                distance: c.distance,
                why,
                score_parts: parts,
                onset: onset.clone(),
            }
        })
        .collect()
}

fn time_evidence(t: i64, onset: &OnsetInfo) -> String {
    let what = if onset.detected {
        "the onset"
    } else {
        "the symptom time (no onset detected)"
    };
    let d = onset.time_ms - t;
    if d >= 0 {
        format!(
            "{} before {what} ({})",
            crate::signals::fmt_duration(d),
            onset.time
        )
    } else {
        format!(
            "{} after {what} ({})",
            crate::signals::fmt_duration(-d),
            onset.time
        )
    }
}

/// The flat frame of an answer (Grafana Infinity): one object per suspect,
/// scalar fields only, `why` joined with " · ", the onset flattened.
pub fn frame(suspects: &[Suspect]) -> Vec<Value> {
    suspects
        .iter()
        .map(|s| {
            json!({
                "rank": s.rank,
                "score": s.score,
                "time": s.time,
                "time_ms": s.time_ms,
                "cluster": s.cluster,
                "kind": s.kind,
                "namespace": s.namespace,
                "name": s.name,
                "workload": s.workload,
                "workload_namespace": s.workload_namespace,
                "category": s.category.name(),
                "summary": s.summary,
                "who": s.who.clone().unwrap_or_default(),
                "distance": s.distance,
                "why": s.why.join(" · "),
                "onset_time": s.onset.time,
                "onset_signal": s.onset.signal,
                "onset_detected": s.onset.detected,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signals::SignalKind;

    fn cand(cat: Category, t: i64, distance: usize, strength: f64) -> Candidate {
        Candidate {
            time_ms: t,
            cluster: "c".into(),
            kind: "Deployment".into(),
            namespace: "shop".into(),
            name: format!("w{t}-{distance}"),
            workload: "w".into(),
            workload_namespace: "shop".into(),
            category: cat,
            summary: "s".into(),
            who: None,
            distance,
            why: vec![],
            shift: (strength > 0.0).then(|| Shift {
                kind: SignalKind::ErrorRatio,
                subject: "shop/w".into(),
                before: 0.0,
                after: 0.3,
                lag_ms: 5000,
                z: 10.0,
                strength,
            }),
            replicasets: None,
            unmeasured: false,
        }
    }

    fn onset(t: i64) -> OnsetInfo {
        OnsetInfo {
            time: format_rfc3339_ms(t),
            time_ms: t,
            alarm_ms: t,
            detected: true,
            signal: "error ratio".into(),
            subject: "shop/w".into(),
            source: "beyla".into(),
            baseline: Some(0.0),
            value: Some(0.3),
            unit: Some(Unit::Ratio),
            summary: String::new(),
        }
    }

    #[test]
    fn scores_stay_in_range_and_order_by_evidence_time_distance() {
        let o = onset(3_600_000);
        let w = 7_200_000;
        let near_measured = cand(Category::Spec, 3_590_000, 2, 0.95);
        let near_unmoved = cand(Category::Image, 3_590_000, 0, 0.0);
        let far = cand(Category::Image, 600_000, 0, 0.95);
        let after = cand(Category::Image, 3_900_000, 0, 0.95);
        for c in [&near_measured, &near_unmoved, &far, &after] {
            let (s, _) = score(c, &o, 30_000, w);
            assert!((0.0..=1.0).contains(&s));
        }
        let r = rank(
            vec![far.clone(), after, near_unmoved, near_measured.clone()],
            &o,
            30_000,
            w,
            &[],
            10,
        );
        assert_eq!(r[0].name, near_measured.name);
        assert_eq!(r[0].rank, 1);
        assert!(r[0].why[0].contains("rose from"));
        assert!(r.iter().all(|s| s.score <= r[0].score));
        // A change after the alarm is an effect: no time proximity at all.
        let late = r.iter().find(|s| s.time_ms == 3_900_000).unwrap();
        assert_eq!(late.score_parts.time, 0.0);
    }

    #[test]
    fn replicaset_contrast_counts_as_evidence() {
        let mut c = cand(Category::Image, 3_590_000, 0, 0.0);
        let o = onset(3_600_000);
        let base = score(&c, &o, 30_000, 7_200_000).0;
        c.replicasets = Some(ReplicaSetContrast {
            new_pods: 1,
            old_pods: 2,
            new_ratio: 0.31,
            old_ratio: 0.002,
        });
        let with = score(&c, &o, 30_000, 7_200_000).0;
        assert!(with > base + 0.3);
        assert_eq!(
            c.replicasets.unwrap().evidence(),
            "the new ReplicaSet's pods (1) fail 31.0 %, the old ones (2) 0.20 %"
        );
    }

    #[test]
    fn ties_are_deterministic_and_duplicates_folded() {
        let o = onset(1_000_000);
        let a = cand(Category::Config, 900_000, 1, 0.5);
        let mut b = a.clone();
        b.name = "a-first".into();
        let dup = a.clone();
        let r1 = rank(
            vec![a.clone(), b.clone(), dup],
            &o,
            30_000,
            7_200_000,
            &[],
            10,
        );
        let r2 = rank(vec![b, a], &o, 30_000, 7_200_000, &[], 10);
        assert_eq!(r1.len(), 2);
        assert_eq!(r1, r2);
        assert_eq!(r1[0].name, "a-first");
    }

    #[test]
    fn frame_is_flat() {
        let o = onset(1_000_000);
        let mut c = cand(Category::NetworkPolicy, 900_000, 1, 0.5);
        c.why = vec!["x".into()];
        let r = rank(vec![c], &o, 30_000, 7_200_000, &["h".into()], 10);
        let f = frame(&r);
        assert_eq!(f[0]["category"], "network_policy");
        assert!(f[0]["why"].as_str().unwrap().contains(" · "));
        assert!(f[0]
            .as_object()
            .unwrap()
            .values()
            .all(|v| !v.is_array() && !v.is_object()));
    }
}
