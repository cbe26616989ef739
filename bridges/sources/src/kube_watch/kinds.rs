//! The kinds the watch covers: `group/version/Kind[/plural]` specs, the
//! default list, and parsing of `KUBE_INSIGHT_EVENTS_KINDS`.

use super::WatchError;
use kube::api::{ApiResource, GroupVersionKind};
use std::fmt;

/// The default kinds: events, workloads, pods, networking, config, nodes,
/// namespaces. Secrets are never watched.
pub const DEFAULT_KINDS: &[&str] = &[
    "events.k8s.io/v1/Event",
    "apps/v1/Deployment",
    "apps/v1/StatefulSet",
    "apps/v1/DaemonSet",
    "apps/v1/ReplicaSet",
    "batch/v1/CronJob",
    "batch/v1/Job",
    "v1/Pod",
    "v1/Service",
    "networking.k8s.io/v1/Ingress",
    "networking.k8s.io/v1/NetworkPolicy",
    "autoscaling/v2/HorizontalPodAutoscaler",
    "policy/v1/PodDisruptionBudget",
    "v1/ConfigMap",
    "v1/Node",
    "v1/Namespace",
];

/// One watched kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KindSpec {
    /// Empty for the core group.
    pub group: String,
    pub version: String,
    pub kind: String,
    /// The resource name in URLs (`deployments`).
    pub plural: String,
}

impl KindSpec {
    /// Parses `group/version/Kind`, `version/Kind` (core group) or either
    /// followed by `/plural` for kinds whose plural is irregular.
    pub fn parse(input: &str) -> Result<KindSpec, WatchError> {
        let s = input.trim();
        let bad = |reason: &str| WatchError::Kind {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        let parts: Vec<&str> = s.split('/').collect();
        let (group, version, kind, plural) = match parts.as_slice() {
            [v, k] => ("", *v, *k, None),
            [g, v, k] if g.contains('.') || !k.chars().next().is_some_and(char::is_lowercase) => {
                (*g, *v, *k, None)
            }
            [v, k, p] => ("", *v, *k, Some(*p)),
            [g, v, k, p] => (*g, *v, *k, Some(*p)),
            _ => return Err(bad(
                "expected group/version/Kind, version/Kind (core), optionally followed by /plural",
            )),
        };
        if version.is_empty() || !version.starts_with('v') {
            return Err(bad("the version must look like v1, v2 or v1beta1"));
        }
        if !kind.chars().next().is_some_and(char::is_uppercase)
            || !kind.chars().all(|c| c.is_ascii_alphanumeric())
        {
            return Err(bad("the Kind must be CamelCase, as in Deployment"));
        }
        if kind == "Secret" {
            return Err(bad("Secrets are never watched"));
        }
        let plural = match plural {
            Some(p)
                if !p.is_empty()
                    && p.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()) =>
            {
                p.to_string()
            }
            Some(_) => return Err(bad("the plural must be lower case, as in deployments")),
            None => ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind)).plural,
        };
        Ok(KindSpec {
            group: group.to_string(),
            version: version.to_string(),
            kind: kind.to_string(),
            plural,
        })
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn api_resource(&self) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(&self.group, &self.version, &self.kind),
            &self.plural,
        )
    }

    /// Events go to the events table, not to object versions.
    pub fn is_event(&self) -> bool {
        self.kind == "Event" && (self.group.is_empty() || self.group == "events.k8s.io")
    }
}

impl fmt::Display for KindSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.api_version(), self.kind)
    }
}

/// Parses a comma or newline separated list. `default` stands for
/// [`DEFAULT_KINDS`], so `default,argoproj.io/v1alpha1/Rollout` adds Argo
/// Rollouts; an empty list is the default list.
pub fn parse_kinds(list: &str) -> Result<Vec<KindSpec>, WatchError> {
    let mut out: Vec<KindSpec> = Vec::new();
    let entries: Vec<&str> = list
        .split([',', '\n', ';'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let entries = if entries.is_empty() {
        vec!["default"]
    } else {
        entries
    };
    for e in entries {
        if e == "default" {
            for d in DEFAULT_KINDS {
                out.push(KindSpec::parse(d)?);
            }
        } else {
            out.push(KindSpec::parse(e)?);
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|k| seen.insert((k.group.clone(), k.kind.clone())));
    if out.iter().filter(|k| k.is_event()).count() > 1 {
        return Err(WatchError::Kind {
            input: list.to_string(),
            reason: "watch Events once: v1/Event and events.k8s.io/v1/Event are views of the same objects".into(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn specs_and_plurals() {
        let d = parse_kinds("").unwrap();
        assert_eq!(d.len(), DEFAULT_KINDS.len());
        let ing = d.iter().find(|k| k.kind == "Ingress").unwrap();
        assert_eq!(ing.plural, "ingresses");
        let np = d.iter().find(|k| k.kind == "NetworkPolicy").unwrap();
        assert_eq!(np.plural, "networkpolicies");
        let pod = KindSpec::parse("v1/Pod").unwrap();
        assert_eq!(
            (
                pod.group.as_str(),
                pod.plural.as_str(),
                pod.api_version().as_str()
            ),
            ("", "pods", "v1")
        );
        let r = parse_kinds("default, argoproj.io/v1alpha1/Rollout").unwrap();
        assert_eq!(
            r.last().unwrap().to_string(),
            "argoproj.io/v1alpha1/Rollout"
        );
        let x = KindSpec::parse("example.com/v1/Thing/thingies").unwrap();
        assert_eq!(x.plural, "thingies");
        for bad in [
            "Pod",
            "v1/Secret",
            "apps/x1/Deployment",
            "apps/v1/deployment",
            "a/b/c/d/e",
            "v1/Pod/Pods",
        ] {
            let e = KindSpec::parse(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
        assert!(parse_kinds("default,v1/Event").is_err());
    }
}
