//! What a workload's stored object says about what can affect it: the
//! ConfigMaps and Secrets its pod template references, its pod labels,
//! its images; and whether a Service, NetworkPolicy, PDB or HPA selects
//! it. Pure, over the sanitized objects the event store keeps.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// The kinds whose objects are workloads (their own versions are candidates).
pub const WORKLOAD_KINDS: &[&str] = &["Deployment", "StatefulSet", "DaemonSet", "Rollout"];

/// What a workload's pod template references and looks like.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TemplateFacts {
    pub labels: BTreeMap<String, String>,
    pub config_maps: BTreeSet<String>,
    pub secrets: BTreeSet<String>,
    /// (container, image), init containers included.
    pub images: Vec<(String, String)>,
}

fn pod_spec(workload: &Value) -> Option<&Value> {
    workload
        .pointer("/spec/template/spec")
        .or_else(|| workload.pointer("/spec/jobTemplate/spec/template/spec"))
        // A Pod itself.
        .or_else(|| {
            workload
                .get("spec")
                .filter(|s| s.get("containers").is_some())
        })
}

fn str_at<'a>(v: &'a Value, path: &str) -> Option<&'a str> {
    v.pointer(path)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// The facts of a workload object (Deployment, StatefulSet, …, or a Pod).
pub fn template_facts(workload: &Value) -> TemplateFacts {
    let mut f = TemplateFacts::default();
    let labels = workload
        .pointer("/spec/template/metadata/labels")
        .or_else(|| workload.pointer("/metadata/labels"));
    if let Some(Value::Object(m)) = labels {
        for (k, v) in m {
            if let Some(v) = v.as_str() {
                f.labels.insert(k.clone(), v.to_string());
            }
        }
    }
    let Some(spec) = pod_spec(workload) else {
        return f;
    };
    for vol in spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(n) = str_at(vol, "/configMap/name") {
            f.config_maps.insert(n.to_string());
        }
        if let Some(n) = str_at(vol, "/secret/secretName") {
            f.secrets.insert(n.to_string());
        }
        for src in vol
            .pointer("/projected/sources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(n) = str_at(src, "/configMap/name") {
                f.config_maps.insert(n.to_string());
            }
            if let Some(n) = str_at(src, "/secret/name") {
                f.secrets.insert(n.to_string());
            }
        }
    }
    for list in ["initContainers", "containers"] {
        for c in spec
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let (Some(name), Some(image)) = (str_at(c, "/name"), str_at(c, "/image")) {
                f.images.push((name.to_string(), image.to_string()));
            }
            for ef in c
                .get("envFrom")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(n) = str_at(ef, "/configMapRef/name") {
                    f.config_maps.insert(n.to_string());
                }
                if let Some(n) = str_at(ef, "/secretRef/name") {
                    f.secrets.insert(n.to_string());
                }
            }
            for e in c.get("env").and_then(Value::as_array).into_iter().flatten() {
                if let Some(n) = str_at(e, "/valueFrom/configMapKeyRef/name") {
                    f.config_maps.insert(n.to_string());
                }
                if let Some(n) = str_at(e, "/valueFrom/secretKeyRef/name") {
                    f.secrets.insert(n.to_string());
                }
            }
        }
    }
    f
}

/// A Kubernetes `LabelSelector` (`matchLabels` and `matchExpressions`)
/// against labels. An empty selector selects everything, as for a
/// NetworkPolicy's `podSelector: {}`.
pub fn label_selector_matches(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    if let Some(Value::Object(m)) = selector.get("matchLabels") {
        for (k, v) in m {
            if labels.get(k).map(String::as_str) != v.as_str() {
                return false;
            }
        }
    }
    for e in selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = e.get("key").and_then(Value::as_str).unwrap_or("");
        let values: Vec<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let have = labels.get(key).map(String::as_str);
        let ok = match e.get("operator").and_then(Value::as_str).unwrap_or("") {
            "In" => have.is_some_and(|h| values.contains(&h)),
            "NotIn" => have.is_none_or(|h| !values.contains(&h)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// A Service's `spec.selector` (a plain map; an empty one selects nothing:
/// such a Service has manual endpoints).
pub fn map_selector_matches(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    match selector {
        Value::Object(m) if !m.is_empty() => m
            .iter()
            .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str()),
        _ => false,
    }
}

/// Whether the object (a Service, NetworkPolicy, PodDisruptionBudget or
/// HorizontalPodAutoscaler) applies to the workload `name` whose pods carry
/// `labels`; `None` for other kinds.
pub fn selects(
    kind: &str,
    object: &Value,
    workload: &str,
    labels: &BTreeMap<String, String>,
) -> Option<bool> {
    match kind {
        "Service" => Some(
            object
                .pointer("/spec/selector")
                .is_some_and(|s| map_selector_matches(s, labels)),
        ),
        "NetworkPolicy" => Some(
            object
                .pointer("/spec/podSelector")
                .is_some_and(|s| label_selector_matches(s, labels)),
        ),
        "PodDisruptionBudget" => Some(
            object
                .pointer("/spec/selector")
                .is_some_and(|s| label_selector_matches(s, labels)),
        ),
        "HorizontalPodAutoscaler" => {
            Some(str_at(object, "/spec/scaleTargetRef/name") == Some(workload))
        }
        _ => None,
    }
}

/// The category of a change to the workload object itself, from its state
/// before and after: `image` (a container image changed), `spec` (another
/// part of the pod template), `scale` (replicas only), or `None` when
/// nothing but status and bookkeeping changed (not a change).
pub fn workload_change_category(before: Option<&Value>, after: &Value) -> Option<&'static str> {
    let Some(before) = before else {
        return Some("spec");
    };
    let (fb, fa) = (template_facts(before), template_facts(after));
    if fb.images != fa.images {
        return Some("image");
    }
    let tb = before.pointer("/spec/template");
    let ta = after.pointer("/spec/template");
    if tb != ta {
        return Some("spec");
    }
    let strip = |v: &Value| {
        let mut s = v.get("spec").cloned().unwrap_or(Value::Null);
        if let Value::Object(m) = &mut s {
            m.remove("replicas");
        }
        s
    };
    if strip(before) != strip(after) {
        return Some("spec");
    }
    if before.pointer("/spec/replicas") != after.pointer("/spec/replicas") {
        return Some("scale");
    }
    None
}

/// `image A → B` lines of what changed between two workload states.
pub fn image_changes(before: Option<&Value>, after: &Value) -> Vec<String> {
    let fa = template_facts(after);
    let fb = before.map(template_facts).unwrap_or_default();
    let old: BTreeMap<&str, &str> = fb
        .images
        .iter()
        .map(|(c, i)| (c.as_str(), i.as_str()))
        .collect();
    fa.images
        .iter()
        .filter_map(|(c, i)| match old.get(c.as_str()) {
            Some(o) if o != i => Some(format!("container {c}: {o} → {i}")),
            None if before.is_some() => Some(format!("container {c}: new, {i}")),
            _ => None,
        })
        .collect()
}

/// The replicas of a workload state.
pub fn replicas(v: &Value) -> Option<i64> {
    v.pointer("/spec/replicas").and_then(Value::as_i64)
}

/// What a Node version says that matters to pods: `Ready` condition
/// status, taints, unschedulable.
pub fn node_facts(node: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for c in node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let t = c.get("type").and_then(Value::as_str).unwrap_or("");
        let s = c.get("status").and_then(Value::as_str).unwrap_or("");
        let bad = if t == "Ready" {
            s != "True"
        } else {
            s == "True"
        };
        if bad {
            out.push(format!("{t}={s}"));
        }
    }
    if node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        out.push("unschedulable (cordoned)".to_string());
    }
    for t in node
        .pointer("/spec/taints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = t.get("key").and_then(Value::as_str).unwrap_or("");
        let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
        out.push(format!("taint {key}:{effect}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deploy(image: &str, replicas: i64, cm: &str) -> Value {
        json!({
            "kind": "Deployment",
            "metadata": {"name": "payment", "namespace": "shop", "labels": {"x": "y"}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "payment"}},
                "template": {
                    "metadata": {"labels": {"app": "payment", "tier": "backend"}},
                    "spec": {
                        "volumes": [
                            {"name": "c", "configMap": {"name": cm}},
                            {"name": "s", "secret": {"secretName": "payment-tls"}},
                            {"name": "p", "projected": {"sources": [{"configMap": {"name": "shared"}}]}}
                        ],
                        "containers": [{
                            "name": "app", "image": image,
                            "envFrom": [{"secretRef": {"name": "payment-env"}}],
                            "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "flags", "key": "x"}}}]
                        }]
                    }
                }
            },
            "status": {"replicas": replicas}
        })
    }

    #[test]
    fn template_references_and_labels() {
        let f = template_facts(&deploy("r.local/shop/payment:2.1", 3, "payment-config"));
        assert_eq!(f.labels.get("app").map(String::as_str), Some("payment"));
        assert_eq!(
            f.config_maps.iter().cloned().collect::<Vec<_>>(),
            ["flags", "payment-config", "shared"]
        );
        assert_eq!(
            f.secrets.iter().cloned().collect::<Vec<_>>(),
            ["payment-env", "payment-tls"]
        );
        assert_eq!(
            f.images,
            [("app".into(), "r.local/shop/payment:2.1".into())]
        );
    }

    #[test]
    fn selectors() {
        let labels = template_facts(&deploy("i", 1, "c")).labels;
        assert!(label_selector_matches(&json!({}), &labels));
        assert!(label_selector_matches(
            &json!({"matchLabels": {"app": "payment"}, "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["backend"]},
                {"key": "canary", "operator": "DoesNotExist"}
            ]}),
            &labels
        ));
        assert!(!label_selector_matches(
            &json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["backend"]}]}),
            &labels
        ));
        assert!(!map_selector_matches(&json!({}), &labels));
        assert_eq!(
            selects(
                "Service",
                &json!({"spec": {"selector": {"app": "payment"}}}),
                "payment",
                &labels
            ),
            Some(true)
        );
        assert_eq!(
            selects(
                "NetworkPolicy",
                &json!({"spec": {"podSelector": {"matchLabels": {"app": "cart"}}}}),
                "payment",
                &labels
            ),
            Some(false)
        );
        assert_eq!(
            selects(
                "HorizontalPodAutoscaler",
                &json!({"spec": {"scaleTargetRef": {"kind": "Deployment", "name": "payment"}}}),
                "payment",
                &labels
            ),
            Some(true)
        );
        assert_eq!(selects("ConfigMap", &json!({}), "payment", &labels), None);
    }

    #[test]
    fn workload_change_categories() {
        let a = deploy("r/p:2.1", 3, "c");
        let mut status_only = a.clone();
        status_only["status"]["replicas"] = json!(4);
        assert_eq!(workload_change_category(Some(&a), &status_only), None);
        assert_eq!(
            workload_change_category(Some(&a), &deploy("r/p:2.2", 3, "c")),
            Some("image")
        );
        assert_eq!(
            workload_change_category(Some(&a), &deploy("r/p:2.1", 5, "c")),
            Some("scale")
        );
        assert_eq!(
            workload_change_category(Some(&a), &deploy("r/p:2.1", 3, "other")),
            Some("spec")
        );
        assert_eq!(
            image_changes(Some(&a), &deploy("r/p:2.2", 3, "c")),
            ["container app: r/p:2.1 → r/p:2.2"]
        );
    }

    #[test]
    fn node_problems() {
        let n = json!({
            "spec": {"unschedulable": true, "taints": [{"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}]},
            "status": {"conditions": [
                {"type": "Ready", "status": "False"},
                {"type": "MemoryPressure", "status": "False"},
                {"type": "DiskPressure", "status": "True"}
            ]}
        });
        assert_eq!(
            node_facts(&n),
            [
                "Ready=False",
                "DiskPressure=True",
                "unschedulable (cordoned)",
                "taint node.kubernetes.io/not-ready:NoExecute"
            ]
        );
    }
}
