//! Targets: the parts of kube-insight one process can run. `all` is every
//! built target, so one process is the whole single-machine deployment.

use anyhow::{bail, Result};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    Metrics,
    Topology,
    Logs,
    Events,
    Api,
}

impl Target {
    pub const ALL: [Target; 5] = [
        Target::Metrics,
        Target::Topology,
        Target::Logs,
        Target::Events,
        Target::Api,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::Metrics => "metrics",
            Target::Topology => "topology",
            Target::Logs => "logs",
            Target::Events => "events",
            Target::Api => "api",
        }
    }

    /// Whether this version implements the target (every target is built;
    /// kept so a future target can land behind a clear refusal).
    pub fn built(self) -> bool {
        true
    }

    /// What the target does, for `--help` and start-up logs.
    pub fn describe(self) -> &'static str {
        match self {
            Target::Metrics => {
                "Prometheus remote write receiver (push) and federation puller (fallback)"
            }
            Target::Topology => {
                "service graph from Beyla flow and service-graph metrics, saved for time travel"
            }
            Target::Logs => "Fluent Bit receiver (POST /ingest/fluent-bit) and log search",
            Target::Events => {
                "Kubernetes events and object-change watch, kube-eventer receiver (POST /ingest/kube-eventer)"
            }
            Target::Api => "kube-insight API and Prometheus-compatible query API",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The targets selected by `--targets`, in canonical order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSet {
    pub run: Vec<Target>,
    /// Asked for through `all` but not built in this version.
    pub not_built: Vec<Target>,
}

impl TargetSet {
    pub fn contains(&self, t: Target) -> bool {
        self.run.contains(&t)
    }
}

/// Parses a comma list such as `metrics,api` or `all`. Naming a target that is
/// not built yet is an error (it would silently do nothing); `all` runs the
/// built ones and reports the rest.
pub fn parse(list: &str) -> Result<TargetSet> {
    let mut run = Vec::new();
    let mut not_built = Vec::new();
    for raw in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if raw == "all" {
            for t in Target::ALL {
                if t.built() {
                    run.push(t);
                } else {
                    not_built.push(t);
                }
            }
            continue;
        }
        let Some(t) = Target::ALL.into_iter().find(|t| t.name() == raw) else {
            bail!(
                "invalid KUBE_INSIGHT_TARGETS / --targets entry {raw:?}: expected all or a comma list of {}",
                Target::ALL.map(|t| t.name()).join(", ")
            );
        };
        if !t.built() {
            bail!(
                "target {raw:?} is not built in this version of kube-insight ({}); built targets: {}",
                t.describe(),
                Target::ALL.into_iter().filter(|t| t.built()).map(|t| t.name()).collect::<Vec<_>>().join(", ")
            );
        }
        run.push(t);
    }
    run.sort();
    run.dedup();
    not_built.sort();
    not_built.dedup();
    if run.is_empty() {
        bail!("KUBE_INSIGHT_TARGETS / --targets is empty: name at least one target, or all");
    }
    Ok(TargetSet { run, not_built })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_runs_every_built_target_and_reports_the_rest() {
        let s = parse("all").unwrap();
        assert!(s.contains(Target::Metrics) && s.contains(Target::Api));
        assert_eq!(s.run.len(), Target::ALL.len());
        assert!(s.not_built.is_empty());
    }

    #[test]
    fn lists_are_deduplicated_and_validated() {
        let s = parse("api, metrics,api").unwrap();
        assert_eq!(s.run, vec![Target::Metrics, Target::Api]);
        let e = parse("metrics,bogus").unwrap_err().to_string();
        assert!(
            e.contains("\"bogus\"") && e.contains("KUBE_INSIGHT_TARGETS"),
            "{e}"
        );
        assert!(parse(" , ").is_err());
    }
}
