//! Entity identity: `cluster / namespace / pod / container`, and the workload
//! that owns a pod.

use serde::{Deserialize, Serialize};

/// The keys every stored record carries, so drill-down is a key lookup.
/// Levels that do not apply are empty (a namespace-level entity has an empty
/// pod and container).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EntityKey {
    pub cluster: String,
    pub namespace: String,
    pub pod: String,
    pub container: String,
}

impl EntityKey {
    pub fn new(
        cluster: impl Into<String>,
        namespace: impl Into<String>,
        pod: impl Into<String>,
        container: impl Into<String>,
    ) -> Self {
        EntityKey {
            cluster: cluster.into(),
            namespace: namespace.into(),
            pod: pod.into(),
            container: container.into(),
        }
    }
}

/// A workload: the top controller of a pod (`Deployment`, `StatefulSet`,
/// `DaemonSet`, `Job`, `CronJob`…), or the pod itself when it has no owner.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Workload {
    pub kind: String,
    pub name: String,
}

/// One row of the entity tree, for a time range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entity {
    pub cluster: String,
    pub namespace: String,
    pub workload_kind: String,
    pub workload: String,
    pub pod: String,
    pub container: String,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
}

/// Resolves a pod's workload from kube-state-metrics owner facts:
/// `kube_pod_owner` gives the pod's owner, and when that is a ReplicaSet,
/// `kube_replicaset_owner` gives the Deployment (or other) above it. A Job
/// owned by a CronJob is resolved the same way when that fact is known.
pub fn resolve_workload(
    pod_owner: Option<(&str, &str)>,
    parent_of: impl Fn(&str, &str) -> Option<(String, String)>,
) -> Option<Workload> {
    let (kind, name) = pod_owner?;
    if kind.is_empty() || name.is_empty() || name == "<none>" {
        return None;
    }
    if kind == "ReplicaSet" || kind == "Job" {
        if let Some((pk, pn)) = parent_of(kind, name) {
            if !pk.is_empty() && !pn.is_empty() && pn != "<none>" {
                return Some(Workload { kind: pk, name: pn });
            }
        }
    }
    Some(Workload {
        kind: kind.to_string(),
        name: name.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicaset_resolves_to_its_deployment() {
        let w = resolve_workload(Some(("ReplicaSet", "api-5f6d7c8b9")), |k, n| {
            (k == "ReplicaSet" && n == "api-5f6d7c8b9")
                .then(|| ("Deployment".to_string(), "api".to_string()))
        });
        assert_eq!(
            w,
            Some(Workload {
                kind: "Deployment".into(),
                name: "api".into()
            })
        );
    }

    #[test]
    fn bare_replicaset_and_statefulset_stay_themselves() {
        let w = resolve_workload(Some(("ReplicaSet", "lonely")), |_, _| None);
        assert_eq!(w.unwrap().kind, "ReplicaSet");
        let w = resolve_workload(Some(("StatefulSet", "db")), |_, _| None);
        assert_eq!(w.unwrap().name, "db");
        assert_eq!(resolve_workload(Some(("", "")), |_, _| None), None);
        assert_eq!(resolve_workload(None, |_, _| None), None);
    }
}
